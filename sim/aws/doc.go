// Package aws is the simulated AWS: moto's EC2 server (moto_server, a real
// third-party implementation of the EC2 API, run as a process) plus a
// Watcher that makes moto's instances real VMs on this machine through the
// boot machinery of sim/machine.
//
// Setup makes the simulated network in moto — the VPC 127.80.0.0/16 with a
// subnet 127.80.<n>.0/24 per zone, so instances get loopback addresses —
// and registers the AMI that light stemcells name. The watcher polls EC2
// with the real aws-sdk-go-v2 and boots, stops, restarts and deletes each
// instance's VM as its state changes; each VM's agent reads its settings
// from its own IMDSv2 (PUT /latest/api/token, then /latest/user-data and
// /latest/meta-data/instance-id), served by this package on a 127.x
// listener whose URL the agent is given. EBS volumes attached to an
// instance appear in its VM as loop devices at the Nitro NVMe by-id names
// the agent resolves the cpi-aws disk hint with.
//
// moto is started with two additions (sim/aws/motofix): a terminated
// instance's address and network interface are freed, as on EC2, and
// RebootInstances records the instance in a file the watcher reads, so the
// VM reboots. What moto does not do, and so the simulation does not
// either: root and ephemeral volumes (deleted with the instance) are not
// shown to the VM; security groups do not filter traffic; moto keeps its
// state in memory, so a restarted simulator starts an empty cloud (and
// deletes the VMs left by the previous one).
package aws
