package release

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteSummary prints a human-readable listing of a release manifest: name,
// version, commit, then a table of jobs and one of packages.
func WriteSummary(w io.Writer, m *Manifest) error {
	commit := m.CommitHash
	if m.UncommittedChanges {
		commit += "+"
	}
	fmt.Fprintf(w, "Name     %s\nVersion  %s\nCommit   %s\n\n", m.Name, m.Version, commit)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Job\tFingerprint\tSHA256\tPackages")
	for _, j := range m.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", j.Name, short(j.Fingerprint), short(j.SHA256), join(j.Packages))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Package\tFingerprint\tSHA256\tDependencies")
	for _, p := range m.Packages {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, short(p.Fingerprint), short(p.SHA256), join(p.Dependencies))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(m.CompiledPackages) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "Compiled package\tFingerprint\tStemcell\tDependencies")
		for _, p := range m.CompiledPackages {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Name, short(p.Fingerprint), p.Stemcell, join(p.Dependencies))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "\n%d jobs, %d packages, %d compiled packages\n", len(m.Jobs), len(m.Packages), len(m.CompiledPackages))
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d jobs, %d packages\n", len(m.Jobs), len(m.Packages))
	return err
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func join(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	out := s[0]
	for _, x := range s[1:] {
		out += ", " + x
	}
	return out
}
