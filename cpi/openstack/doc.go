// Package openstack is the OpenStack CPI: VMs are Nova servers, persistent
// disks are Cinder volumes, stemcells are Glance images (light: an existing
// image by id; heavy: streamed from the stemcell's image file), networks and
// floating IPs are Neutron's. It speaks Keystone v3 (password or application
// credential) through gophercloud.
//
// CreateVM keeps a clean-up ledger (ports, server, floating IP association)
// undone in reverse on failure; a port conflict deletes the unbound ports
// holding the address and tries once more; a server in ERROR is reported
// with Nova's fault message and deleted. Every object carries the creation
// tags as metadata, so ListVMs and ListDisks find them. docs/cpi/openstack.md
// is the reference; sim/openstack is the simulated cloud it is tested on.
package openstack
