package azure

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
)

// Names. Every resource a VM owns is named after the VM, which is named
// after its agent id, so that a failed or repeated call finds what an
// earlier one made by name and never by listing (a list can lag behind a
// create and miss the NIC that still holds the address).
const (
	vmPrefix       = "vm-"
	diskPrefix     = "disk-"
	snapshotPrefix = "snapshot-"
	// maxNICs is how many NIC names a delete of a VM that is already
	// gone tries (the VM named them when it still existed).
	maxNICs = 4
)

var invalidNameChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// vmName is the VM's name for an agent id: Azure's rules for Linux VM
// names (64 characters of letters, digits, '.', '_' and '-').
func vmName(agentID string) string {
	n := vmPrefix + invalidNameChars.ReplaceAllString(agentID, "-")
	if len(n) > 64 {
		n = n[:64]
	}
	return strings.TrimRight(n, ".-")
}

func nicName(vm string, i int) string { return fmt.Sprintf("%s-nic-%d", vm, i) }
func pipName(vm string) string        { return vm + "-pip" }
func osDiskName(vm string) string     { return vm + "-os" }
func ephemeralName(vm string) string  { return vm + "-eph" }

// computerName is the VM's host name: the agent id, as BOSH names hosts,
// within Linux's 64 characters.
func computerName(agentID string) string {
	n := invalidNameChars.ReplaceAllString(agentID, "-")
	if len(n) > 64 {
		n = n[:64]
	}
	return strings.Trim(n, ".-_")
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// resource is a resource's group and name, parsed from its ARM id (the
// cid of VMs, disks and snapshots).
type resource struct {
	id    string
	group string
	name  string
}

// parseID parses an ARM id of the resource type (e.g.
// "Microsoft.Compute/virtualMachines"); ok is false when cid is not one,
// which callers treat as "no such object".
func parseID(cid, resourceType string) (resource, bool) {
	id, err := arm.ParseResourceID(cid)
	if err != nil || !strings.EqualFold(id.ResourceType.String(), resourceType) || id.ResourceGroupName == "" {
		return resource{}, false
	}
	return resource{id: cid, group: id.ResourceGroupName, name: id.Name}, true
}

// Resource types.
const (
	typeVM       = "Microsoft.Compute/virtualMachines"
	typeDisk     = "Microsoft.Compute/disks"
	typeSnapshot = "Microsoft.Compute/snapshots"
	typeImage    = "Microsoft.Compute/images"
)

func (c *CPI) resourceID(group, typ, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/%s/%s", c.props.SubscriptionID, group, typ, name)
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
