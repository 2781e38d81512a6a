// Package sim holds Compleat's cloud simulators: servers that answer a cloud's
// API as the cloud documents it and boot a real local VM (a directory and an
// agent process tree on an address in 127.0.0.0/8) for every instance the API
// creates, serving that VM the cloud's metadata so that the agent reads its
// settings exactly as it does on the cloud. See docs/clouds.md.
//
// Subpackages: the VM boot machinery shared by every simulated cloud, and one
// package per cloud (AWS over moto's EC2 server, Azure's ARM API, OpenStack's
// Keystone/Nova/Neutron/Cinder/Glance). The cloudsim command runs them.
package sim
