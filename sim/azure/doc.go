// Package azure simulates the parts of Azure that the Azure CPI uses, as
// Azure's REST APIs document them, on loopback:
//
//   - Entra ID's token endpoint for the OAuth2 client credentials grant
//     (client secret), with the OpenID configuration MSAL reads first;
//   - Azure Resource Manager over HTTPS (a CA of its own, which clients are
//     told to trust): resource groups and their tags; virtual machines,
//     managed disks, snapshots, images and marketplace images
//     (Microsoft.Compute); network interfaces, public IPs, and virtual
//     networks, subnets, network security groups and load balancers that
//     are read only (Microsoft.Network), seeded from [Config].
//
// Every request needs a bearer token from the token endpoint and an
// api-version. Resource ids are ARM ids, matched without regard to case as
// ARM does. Creates, updates and deletes are long-running operations that
// answer 201/202 with Azure-AsyncOperation (compute and network) or
// Location (disks and snapshots) headers and Retry-After, and finish after
// the configured delay; errors have ARM's body {"error": {"code",
// "message"}} with Azure's codes (ResourceNotFound, ResourceGroupNotFound,
// NicInUse, OperationNotAllowed, PreconditionFailed, ...). A DELETE of a
// missing resource answers 204, as ARM's resource provider contract says.
//
// Faults are injected per request ([Server.Inject]): an error answer such
// as 429 with Retry-After or a 5xx, a VM create whose operation ends
// Failed with a capacity code, or an operation that never ends.
//
// What is not simulated: availability sets, scale sets, galleries, blob
// storage, role assignments, quotas, regions' capacity (unless injected),
// and ARM's throttling (unless injected). A VM is a record; the [Hooks]
// tell the boot machinery when to start, restart or stop the local VM
// that stands for it.
package azure
