// Package aws is the CPI for Amazon EC2: VMs are EC2 instances, persistent
// disks are EBS volumes, snapshots are EBS snapshots.
//
// The plugin is configured by the properties of the director's cpi config
// (see [Properties] and docs/cpi/aws.md): a region, credentials (static keys
// or the SDK's default chain, for an instance profile), defaults for key
// pair and security groups, and optionally an endpoint (a VPC endpoint, or
// moto in tests).
//
// Stemcells are light: the stemcell names an existing AMI per region. So that
// every CreateStemcell has its own cid, and DeleteStemcell really deletes
// something, the plugin records each stemcell in the cloud as an EC2 launch
// template named "compleat-stemcell-…" whose data holds the AMI id; the
// stemcell cid is the launch template's id. The plugin keeps no state of its
// own: everything it knows it reads back from EC2, so several plugin
// processes (or a restarted one) agree.
//
// A VM's agent settings travel as the instance's user data (JSON; the agent
// reads it through IMDSv2). The instance id is only known after RunInstances
// and user data cannot change on a running instance, so the settings carry
// no "vm" key: the agent learns its cid from the instance metadata
// (/latest/meta-data/instance-id).
//
// Every EC2 call runs under the caller's context; throttling and transient
// faults are retried by the SDK's standard retryer with exponential backoff
// (max_retries); waits (instance running, volume attached, ...) poll at
// poll_interval until done or the context ends.
package aws
