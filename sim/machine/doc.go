// Package machine boots the local VMs of a simulated cloud: the one boot
// machinery every simulator in sim/ plugs its cloud API into.
//
// When a simulated cloud API starts an instance, the simulator calls
// Host.Boot with a Spec: the instance's id, its private address (which the
// simulated network keeps in 127.0.0.0/8), the agent binary of its
// stemcell, the agent's --infrastructure and the way the cloud hands the
// instance its settings — an http.Handler serving the cloud's metadata
// service (AWS IMDSv2, Azure IMDS, the OpenStack metadata service), a
// config drive's files, or both. Boot then
//
//   - makes the VM's directory, <dir>/vms/<id>/ (root/ is its /var/vcap,
//     agent.log the agent's output, vm.json the record, dev-disk/ its
//     /dev/disk, config-drive/ the drive's files);
//   - serves the metadata handler on a listener of its own at
//     http://<metadata address>:<port> (a 127.x address, never
//     169.254.169.254, which is no loopback address) and tells the agent
//     that URL with --metadata-url;
//   - starts the stemcell's agent with cpi/proctree, exactly as the local
//     CPI does: detached in its own session and, as root, in a mount
//     namespace of its own where root/ is /var/vcap and dev-disk/ is
//     /dev/disk. Without root (or without mount namespaces) the agent runs
//     with --base-dir <vm>/root and the VM cannot take volumes.
//
// The agent then reads its settings exactly as it does on that cloud.
//
// Stop ends every process of the VM (the whole tree: session, descendants
// and mount namespace), Start boots a stopped VM again, Reboot does both,
// Kill ends the tree at once with SIGKILL, as a host failure would, and
// Delete stops the VM and removes everything Boot made.
//
// Volumes are image files (CreateImage makes a sparse one). AttachVolume
// attaches the image to a loop device with partition scanning, as a
// hypervisor presents a block device, and links it under the VM's
// /dev/disk at the names the cloud's guests see, which is where the agent
// looks for the disk named by the CPI's hint: AWSVolumeLinks (Nitro NVMe
// by-id names), OpenStackVolumeLinks (virtio serials) and AzureLUNLinks
// (the Azure udev rules' LUN links). The agent partitions, formats and
// mounts the device itself. DetachVolume removes the links and releases
// the loop device.
//
// A Host keeps a record of every VM on disk, so Delete and Leftovers work
// after the simulator restarts; the metadata listeners live as long as the
// Host (Close ends them). A simulated cloud whose own state is lost on a
// restart deletes the leftovers when it starts.
package machine
