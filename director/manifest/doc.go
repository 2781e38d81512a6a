// Package manifest reads the documents an operator hands the director: the
// deployment manifest, the cloud config and the runtime config, in BOSH v2
// shapes.
//
// Parsing goes through YAML nodes rather than straight into structs, so
// every value keeps the line and column it was written at. Every problem is
// reported, not just the first, as an [Errors] list whose items read
//
//	web.yml:12:9: instance_groups[1].jobs[0].release: release "nginx" is not in releases
//
// The stages are:
//
//	Load            read the file, apply ops files (package opsfile), then
//	                ((var)) interpolation (package interpolate)
//	ParseDeployment shapes and values of every field, references inside the
//	                manifest (releases, stemcell aliases, static IP counts)
//	Validate        references into a cloud config (azs, vm_types, networks,
//	                static IPs inside static ranges)
//
// ParseCloudConfig and ParseRuntimeConfig check their documents completely on
// their own. A parsed document remembers where each field was written:
// [Deployment.Errorf] lets later stages (the planner) report problems at the
// right line too.
//
// docs/manifest.md is the operator's reference for every field.
package manifest
