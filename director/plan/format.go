package plan

import (
	"fmt"
	"io"
	"strings"
)

// Format writes the plan for an operator (deploy --dry-run): every group,
// every instance with its AZ, address and changes, the deletions and the
// disks to orphan, then a summary. Rendered files appear by name and short
// hash only, never their content, so secrets stay out of the output.
func (p *Plan) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Deployment %s\n", p.Deployment)
	create, update, recreate, same := 0, 0, 0, 0
	for _, g := range p.Groups {
		azs := "none"
		if len(g.AZs) > 0 {
			azs = strings.Join(g.AZs, " ")
		}
		fmt.Fprintf(&b, "\nInstance group %s: %s, azs %s, stemcell %s\n", g.Name, count(len(g.Instances), "instance"), azs, g.Stemcell)
		for _, in := range g.Instances {
			flags := ""
			if in.Bootstrap {
				flags = " bootstrap"
			}
			az := in.AZ
			if az == "" {
				az = "-"
			}
			addr := in.Address()
			if addr == "" {
				addr = "-"
			}
			fmt.Fprintf(&b, "  %s (%d) az=%s ip=%s%s\n", in.Name(), in.Index, az, addr, flags)
			switch {
			case in.Ignored:
				same++
				b.WriteString("    ignored: left as it is")
				for i, c := range in.Pending {
					sep := ";"
					if i == 0 {
						sep = " (would change:"
					}
					b.WriteString(sep + " " + c.String())
				}
				if len(in.Pending) > 0 {
					b.WriteString(")")
				}
				b.WriteString("\n")
				continue
			case len(in.Changes) == 0:
				same++
				b.WriteString("    no change\n")
				continue
			case !in.Existing || in.VMCID == "":
				create++
			default:
				update++
				if in.Recreate {
					recreate++
				}
			}
			action := "update"
			switch {
			case !in.Existing:
				action = "create"
			case in.VMCID == "":
				action = "create vm"
			case in.Surge:
				action = "recreate for max_surge"
			case in.Recreate:
				action = "recreate"
			}
			fmt.Fprintf(&b, "    %s:", action)
			for i, c := range in.Changes {
				if i > 0 {
					b.WriteString(";")
				}
				b.WriteString(" " + c.String())
			}
			b.WriteString("\n")
			for _, n := range in.Networks {
				ip := "from the cloud"
				if n.IP.IsValid() {
					ip = n.IP.String()
				}
				static := ""
				if n.Static {
					static = " static"
				}
				fmt.Fprintf(&b, "    network %s (%s): %s%s\n", n.Name, n.Type, ip, static)
			}
			if d := in.Disk; d != nil {
				switch {
				case d.ResizeFrom > 0:
					fmt.Fprintf(&b, "    disk: %s resized from %d MB to %s\n", d.CID, d.ResizeFrom, diskLabel(d.SizeMB, d.Type))
				case d.Replaces != "":
					fmt.Fprintf(&b, "    disk: new %s, data moved from %s\n", diskLabel(d.SizeMB, d.Type), d.Replaces)
				case d.CID == "":
					fmt.Fprintf(&b, "    disk: new %s\n", diskLabel(d.SizeMB, d.Type))
				default:
					fmt.Fprintf(&b, "    disk: %s kept (%s)\n", d.CID, diskLabel(d.SizeMB, d.Type))
				}
			}
			for _, j := range in.Jobs {
				var files []string
				for _, f := range j.Rendered.Files {
					files = append(files, f.Path)
				}
				fmt.Fprintf(&b, "    job %s (%s/%s) rendered %s: %s\n", j.Name, j.Release, j.ReleaseVersion, short(j.Rendered.Hash), strings.Join(files, " "))
			}
		}
	}
	if len(p.Delete) > 0 {
		b.WriteString("\nDelete\n")
		for _, d := range p.Delete {
			fmt.Fprintf(&b, "  %s/%s (%d): %s\n", d.Instance.Group, d.Instance.ID, d.Instance.Index, d.Reason)
		}
	}
	if len(p.OrphanDisks) > 0 {
		b.WriteString("\nOrphan disks\n")
		for _, d := range p.OrphanDisks {
			fmt.Fprintf(&b, "  %s of %s: %s\n", d.CID, d.Instance, d.Reason)
		}
	}
	p.formatLinks(&b)
	if len(p.PendingAddresses) > 0 {
		fmt.Fprintf(&b, "\nAddresses on dynamic networks are known once the VMs exist: %s\n", strings.Join(p.PendingAddresses, " "))
	}
	if !p.HasChanges() {
		b.WriteString("\nNo changes: nothing to do.\n")
	} else {
		fmt.Fprintf(&b, "\n%d to create, %d to update (%d recreated), %d to delete, %d unchanged\n", create, update, recreate, len(p.Delete), same)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
