package plan

import (
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// changes computes an instance's change set against what is deployed.
func (c *computer) changes(in *Instance) {
	pl := c.placed[in.ID]
	prev := pl.prev
	add := func(reason, format string, args ...any) {
		in.Changes = append(in.Changes, Change{Reason: reason, Detail: fmt.Sprintf(format, args...)})
	}
	if prev == nil {
		add(ReasonNew, "")
		return
	}
	if prev.Ignore {
		defer c.ignore(in, prev, len(c.plan.OrphanDisks))
	}
	if prev.VMCID == "" {
		add(ReasonVMMissing, "")
	}
	recreate := false
	if prev.Unfinished {
		// The deploy that took it down was cut short: its VM may be half
		// made (disk not attached, jobs stopped or drained). A new VM with
		// its disk is the state this plan knows (found by the torture on
		// the simulated OpenStack: a plugin killed during AttachDisk).
		add(ReasonUnfinished, "taken down by a deploy that did not finish")
		recreate = true
	}
	if prev.Stemcell.OS != in.Stemcell.OS || prev.Stemcell.Version != in.Stemcell.Version {
		add(ReasonStemcell, "%s → %s", prev.Stemcell, in.Stemcell)
		recreate = true
	}
	if prev.VMType != in.VMType {
		add(ReasonVMType, "%s → %s", orNone(prev.VMType), orNone(in.VMType))
		recreate = true
	} else if prev.CloudHash != "" && prev.CloudHash != in.CloudHash {
		add(ReasonCloudConfig, "")
		recreate = true
	}
	if want := c.d.AZCPIs[in.AZ]; want != "" && prev.CPI != "" && prev.VMCID != "" && want != prev.CPI {
		add(ReasonCPI, "%s → %s", prev.CPI, want)
		recreate = true
	}
	if d := networkDiff(prev.Networks, in.Networks); d != "" {
		add(ReasonNetwork, "%s", d)
		recreate = true
	}
	if d := jobsDiff(prev.Jobs, in.Jobs); d != "" {
		add(ReasonJobs, "%s", d)
	}
	if d := packagesDiff(prev.Packages, in.Packages); d != "" {
		add(ReasonPackages, "%s", d)
	}
	if d, links := c.renderedDiff(in.Group, prev.Jobs, in.Jobs); d != "" || links != "" {
		if links != "" {
			add(ReasonLinks, "%s", links)
		}
		if d != "" {
			add(ReasonProperties, "%s", d)
		}
	}
	// Disks: keep, create, replace (size or type changed) or release.
	switch {
	case prev.Disk == nil && in.Disk != nil:
		add(ReasonDisk, "none → %s", diskLabel(in.Disk.SizeMB, in.Disk.Type))
	case prev.Disk != nil && in.Disk == nil:
		add(ReasonDisk, "%s → none", diskLabel(prev.Disk.SizeMB, prev.Disk.Type))
		c.plan.OrphanDisks = append(c.plan.OrphanDisks, OrphanDisk{CID: prev.Disk.CID, Instance: in.Name(), Reason: "persistent disk removed"})
	case prev.Disk != nil && in.Disk != nil:
		if c.resizes(prev, in) {
			add(ReasonDisk, "%s → %s, resized", diskLabel(prev.Disk.SizeMB, prev.Disk.Type), diskLabel(in.Disk.SizeMB, in.Disk.Type))
			in.Disk.CID, in.Disk.ResizeFrom = prev.Disk.CID, prev.Disk.SizeMB
		} else if prev.Disk.SizeMB != in.Disk.SizeMB || prev.Disk.Type != in.Disk.Type {
			add(ReasonDisk, "%s → %s", diskLabel(prev.Disk.SizeMB, prev.Disk.Type), diskLabel(in.Disk.SizeMB, in.Disk.Type))
			in.Disk.Replaces = prev.Disk.CID
			c.plan.OrphanDisks = append(c.plan.OrphanDisks, OrphanDisk{CID: prev.Disk.CID, Instance: in.Name(), Reason: "replaced by a new disk"})
		} else {
			in.Disk.CID = prev.Disk.CID
		}
	}
	if c.d.Recreate && prev.VMCID != "" {
		add(ReasonRecreate, "")
		recreate = true
	}
	if c.d.Unresponsive[in.ID] && prev.VMCID != "" {
		add(ReasonUnresponsive, "")
		recreate = true
	}
	in.Recreate = recreate && prev.VMCID != ""
	in.Surge = c.surge[in.ID] && in.Recreate
}

// ignore sets an ignored instance's change set aside (as Pending) and keeps
// its disk and addresses as recorded, dropping the disks its changes would
// have orphaned (those after the first orphans of the plan).
func (c *computer) ignore(in *Instance, prev *InstanceState, orphans int) {
	in.Ignored, in.Pending, in.Changes = true, in.Changes, nil
	in.Recreate, in.Surge = false, false
	c.plan.OrphanDisks = c.plan.OrphanDisks[:orphans]
	in.Disk = nil
	if d := prev.Disk; d != nil {
		in.Disk = &Disk{CID: d.CID, SizeMB: d.SizeMB, Type: d.Type}
	}
	for i := range in.Networks {
		if a, ok := prev.Networks[in.Networks[i].Name]; ok && a.IsValid() {
			in.Networks[i].IP = a
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func diskLabel(size int, typ string) string {
	if typ != "" {
		return fmt.Sprintf("%d MB, type %s", size, typ)
	}
	return fmt.Sprintf("%d MB", size)
}

func networkDiff(prev map[string]netip.Addr, now []Network) string {
	var parts []string
	seen := map[string]bool{}
	for _, n := range now {
		seen[n.Name] = true
		old, had := prev[n.Name]
		switch {
		case !had:
			parts = append(parts, fmt.Sprintf("%s added", n.Name))
		case n.Type == "dynamic":
			// the cloud assigns the address: nothing to compare
		case old != n.IP:
			parts = append(parts, fmt.Sprintf("%s: %s → %s", n.Name, addrLabel(old), addrLabel(n.IP)))
		}
	}
	return withRemoved(parts, maps.Keys(prev), seen)
}

func addrLabel(a netip.Addr) string {
	if !a.IsValid() {
		return "none"
	}
	return a.String()
}

func jobsDiff(prev []JobState, now []Job) string {
	old := map[string]JobState{}
	for _, j := range prev {
		old[j.Name] = j
	}
	var parts []string
	seen := map[string]bool{}
	for _, j := range now {
		seen[j.Name] = true
		o, had := old[j.Name]
		switch {
		case !had:
			parts = append(parts, j.Name+" added")
		case o.Release != j.Release || o.Fingerprint != j.Fingerprint:
			parts = append(parts, j.Name+" updated")
		}
	}
	before := make([]string, len(prev))
	for i, j := range prev {
		before[i] = j.Name
	}
	return withRemoved(parts, slices.Values(before), seen)
}

// withRemoved ends a diff: the parts found, then "<name> removed" for every
// name that was there before and is not seen now, sorted.
func withRemoved(parts []string, before iter.Seq[string], seen map[string]bool) string {
	var removed []string
	for name := range before {
		if !seen[name] {
			removed = append(removed, name+" removed")
		}
	}
	sort.Strings(removed)
	return strings.Join(append(parts, removed...), ", ")
}

func packagesDiff(prev map[string]string, now []Package) string {
	var parts []string
	seen := map[string]bool{}
	for _, p := range now {
		seen[p.Name] = true
		o, had := prev[p.Name]
		switch {
		case !had:
			parts = append(parts, p.Name+" added")
		case o != p.Fingerprint:
			parts = append(parts, p.Name+" updated")
		}
	}
	return withRemoved(parts, maps.Keys(prev), seen)
}

// renderedDiff names the jobs present before and now whose rendered files
// changed while the job itself did not (so the cause is properties or
// links).
//
// A job that consumes a link of another deployment which changed since the
// last deploy is named in links instead ("job lb: db/main-db"): that link
// is the likely cause.
func (c *computer) renderedDiff(group string, prev []JobState, now []Job) (props, links string) {
	old := map[string]JobState{}
	for _, j := range prev {
		old[j.Name] = j
	}
	var parts, linkParts []string
	for _, j := range now {
		o, had := old[j.Name]
		if !had || o.Fingerprint != j.Fingerprint || o.RenderedHash == j.Rendered.Hash {
			continue
		}
		var changed []string
		for _, k := range c.consumedBy[group+"/"+j.Name] {
			if c.plan.ConsumedStatus[k] == "changed" {
				changed = append(changed, k)
			}
		}
		if len(changed) > 0 {
			linkParts = append(linkParts, "job "+j.Name+": "+strings.Join(changed, " "))
			continue
		}
		parts = append(parts, "job "+j.Name)
	}
	return strings.Join(parts, ", "), strings.Join(linkParts, ", ")
}

// resizes reports whether the instance's persistent disk is resized in
// place: it only grows, keeps its disk type, and stays in a CPI that can
// resize disks (and on a VM of that CPI).
func (c *computer) resizes(prev *InstanceState, in *Instance) bool {
	if prev.Disk.CID == "" || prev.Disk.Type != in.Disk.Type || in.Disk.SizeMB <= prev.Disk.SizeMB {
		return false
	}
	want := c.d.AZCPIs[in.AZ]
	if prev.CPI != "" && prev.CPI != want {
		return false
	}
	return c.d.ResizeDiskCPIs[want]
}
