// Package plan computes what a deploy must do, without doing any of it.
//
// [Compute] takes the desired deployment ([Desired]: the parsed manifest,
// the cloud config, the job and package specs of the releases it names, the
// resolved stemcells and a source of new instance ids) and what is deployed
// ([State], filled by the director from its store), and returns a [Plan]:
//
//   - every desired instance with its AZ, index, id and bootstrap flag. AZ
//     placement is balanced and stable: existing instances keep their AZ and
//     index; scaling adds the lowest free indexes to the emptiest AZs and
//     removes the highest indexes from the fullest;
//   - its networks, with addresses on manual networks: static IPs as given,
//     otherwise an address kept from the last deploy, else the first free
//     one in a subnet of its AZ (never reserved, never in a static range,
//     never the gateway, never an address another deployment holds);
//   - its VM's cloud properties: the AZ's, then the vm_type's or what the
//     CPI calculated for its vm_resources ([Desired.VMCloudProperties],
//     asked for by the director for each of [VMResourcesNeeded]), then the
//     vm_extensions';
//   - its jobs rendered (package template) with resolved links, and the
//     packages they need. A link consumed from another deployment
//     (consumes.x.deployment) resolves against the links that deployment
//     recorded at its last successful deploy ([State.Links]); the plan
//     lists the links this deployment provides ([Plan.Links], shared or
//     not) for the director to record, and those it consumes from others
//     ([Plan.Consumed], [Plan.ConsumedStatus]);
//   - its change set: why the instance must be touched ([Change]), and
//     whether the VM must be recreated. In a group with max_surge (no
//     persistent disk, no static IP) every changed instance is replaced by
//     a VM at a new address ([Instance.Surge]); since that re-renders the
//     jobs consuming links to it, Compute plans again until no further
//     instance surges;
//   - the instances to delete and the persistent disks to orphan (a plan
//     never deletes a disk: replaced or released disks are orphaned, and an
//     instance keeps its disk unless its size or type changes; a disk that
//     only grows in a CPI of [Desired.ResizeDiskCPIs] is kept and resized,
//     [Disk.ResizeFrom]).
//
// Compute does no I/O and is deterministic for a given id source, so the
// same inputs give the same plan; a dry run ([Plan.Format]) changes nothing.
// A plan of an unchanged deployment has no changes.
//
// The director carries a plan out with [Plan.CompileTargets] (package
// compile) and [Plan.Rollout] (package update), then stores each
// [Instance.State] as the next deploy's actual state.
package plan
