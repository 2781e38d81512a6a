// Package openstack is a simulated OpenStack cloud: Keystone v3, Nova,
// Neutron, Cinder and Glance behind one HTTP handler, answering with the
// documented request and response shapes, status codes and error bodies,
// so that gophercloud and the openstack command-line client work against
// it unchanged.
//
// What is simulated:
//
//   - Keystone v3: POST /v3/auth/tokens with the password (user by name and
//     domain, or id) or application_credential method, scoped to the one
//     project by name and domain or id; the token answers X-Subject-Token
//     and a service catalog (compute, network, block-storage/volumev3,
//     image, identity) in one region. Every other call needs a valid
//     X-Auth-Token (401 otherwise).
//   - Nova (/compute/v2.1): servers go BUILD → ACTIVE, or ERROR with a fault
//     (FailNextServers); flavors, key pairs, availability zone "nova",
//     metadata, renames, soft reboots, server groups (members recorded, one
//     host), volume attachments at the next free
//     /dev/vdX whatever device the request names (as libvirt does), and
//     servers_links pagination with absolute hrefs.
//   - Neutron (/network/v2.0): networks with one IPv4 subnet each, all in
//     127.0.0.0/8; ports (a fixed address already held answers 409
//     IpAddressAlreadyAllocated); security groups; floating IPs on the
//     external network.
//   - Cinder (/volume/v3/{project}): volumes (creating → available →
//     attaching → in-use → detaching), extend, metadata, snapshots, volume
//     types "standard" (the default) and "ssd".
//   - Glance (/image/v2): images queued → saving → active; PUT .../file
//     streams the data to disk, hashing it on the way, never held in
//     memory; uploads beyond MaxImageBytes answer 413.
//
// Faults are injected with InjectFault (429 and 413 with Retry-After, 5xx,
// dropped connections) and HoldBuild (a server stuck in BUILD). With a
// Booter, every server really boots: the booter gets the server's config
// drive files and metadata service (openstack/latest/meta_data.json,
// user_data, network_data.json) and shows it its volumes, whose data lives
// in sparse image files under the cloud's data directory.
//
// Not simulated: more than one project, user or region; IPv6; routers,
// load balancers, quotas (beyond Nova's 128 metadata items
// and the image size bound); microversions past 2.1 (Nova) and 3.0
// (Cinder); image import tasks.
package openstack
