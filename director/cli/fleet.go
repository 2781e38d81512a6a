package cli

// Releases and stemcells across the fleet: who uses each version, a
// stemcell rolled through the deployments (upgrade-stemcell), and deleting
// what nothing uses (delete-release, delete-stemcell, clean-up).

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) fleetCmds() []*cobra.Command {
	return []*cobra.Command{a.upgradeStemcellCmd(), a.deleteReleaseCmd(), a.deleteStemcellCmd(), a.cleanUpCmd()}
}

func (a *app) releasesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "releases",
		Short: "List uploaded releases and the deployments using each version",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var rs []apiv1.ReleaseView
			return a.list(cmd.Context(), c, "/v1/releases", &rs, func(w io.Writer) {
				tw := table(w, "Name", "Version", "Commit", "Jobs", "Packages", "Uploaded", "Used by")
				for _, r := range rs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Name, r.Version, dash(r.CommitHash), len(r.Jobs), len(r.Packages), stamp(r.UploadedAt), dash(r.Usage.String()))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d releases\n", len(rs))
			})
		}),
	}
}

func (a *app) stemcellsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stemcells",
		Short: "List uploaded stemcells, their cid per CPI and the deployments using each",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var ss []apiv1.StemcellView
			return a.list(cmd.Context(), c, "/v1/stemcells", &ss, func(w io.Writer) {
				tw := table(w, "Name", "Version", "OS", "CPI", "CID", "Used by")
				for _, s := range ss {
					version := s.Version
					if s.Deleting {
						version += " (deleting)"
					}
					used := dash(s.Usage.String())
					if len(s.CIDs) == 0 {
						fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t%s\n", s.Name, version, s.OS, used)
					}
					cpis := make([]string, 0, len(s.CIDs))
					for name := range s.CIDs {
						cpis = append(cpis, name)
					}
					slices.Sort(cpis)
					for _, name := range cpis {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, version, s.OS, name, s.CIDs[name], used)
					}
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d stemcells\n", len(ss))
			})
		}),
	}
}

func (a *app) upgradeStemcellCmd() *cobra.Command {
	var req apiv1.UpgradeRequest
	var deployments string
	cmd := &cobra.Command{
		Use:   "upgrade-stemcell OS",
		Short: "Roll a stemcell version through the deployments using its OS, one deploy each (canaries as configured), stopping at the first failure",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			req.OS = argv[0]
			for _, d := range strings.Split(deployments, ",") {
				if d = strings.TrimSpace(d); d != "" {
					req.Deployments = append(req.Deployments, d)
				}
			}
			if req.All == (len(req.Deployments) > 0) {
				return Usage(fmt.Errorf("upgrade-stemcell: name the deployments (--deployments a,b) or pass --all"))
			}
			if req.MaxParallel < 1 {
				return Usage(fmt.Errorf("upgrade-stemcell: --max-parallel %d: at least 1", req.MaxParallel))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if !req.DryRun && !a.g.NonInter && !a.g.JSON {
				what := "the newest " + req.OS + " stemcell"
				if req.Version != "" {
					what = req.OS + "/" + req.Version
				}
				target := "every deployment using " + req.OS
				if !req.All {
					target = strings.Join(req.Deployments, ", ")
				}
				if ok, err := a.confirm(fmt.Sprintf("Deploy %s to %s?", what, target)); err != nil || !ok {
					return err
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", "/v1/stemcells/upgrade", req, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Version, "version", "", "stemcell version (default: the newest uploaded of OS)")
	f.StringVar(&deployments, "deployments", "", "comma-separated deployments, rolled in this order")
	f.BoolVar(&req.All, "all", false, "every deployment that uses a stemcell of OS")
	f.IntVar(&req.MaxParallel, "max-parallel", 1, "deployments deployed at once")
	f.BoolVar(&req.DryRun, "dry-run", false, "show each deployment's plan; change nothing")
	f.BoolVar(&req.ContinueOnFailure, "continue-on-failure", false, "go on with the next deployments after one failed")
	return cmd
}

func (a *app) deleteReleaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-release NAME[/VERSION]",
		Short: "Delete a release version (or every version of NAME) no deployment uses, with the blobs only it had",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, version, _ := strings.Cut(argv[0], "/")
			if name == "" || strings.Contains(version, "/") {
				return Usage(fmt.Errorf("delete-release %q: want NAME or NAME/VERSION", argv[0]))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if !a.g.NonInter && !a.g.JSON {
				if ok, err := a.confirm(fmt.Sprintf("Delete release %s?", argv[0])); err != nil || !ok {
					return err
				}
			}
			path := "/v1/releases/" + url.PathEscape(name)
			if version != "" {
				path += "?version=" + url.QueryEscape(version)
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "DELETE", path, nil, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
}

func (a *app) deleteStemcellCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-stemcell NAME/VERSION",
		Short: "Delete a stemcell no deployment uses from every CPI, with its compiled packages",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, version, ok := strings.Cut(argv[0], "/")
			if !ok || name == "" || version == "" || strings.Contains(version, "/") {
				return Usage(fmt.Errorf("delete-stemcell %q: want NAME/VERSION", argv[0]))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if !a.g.NonInter && !a.g.JSON {
				if ok, err := a.confirm(fmt.Sprintf("Delete stemcell %s?", argv[0])); err != nil || !ok {
					return err
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "DELETE", "/v1/stemcells/"+url.PathEscape(name)+"/"+url.PathEscape(version), nil, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
}

func (a *app) cleanUpCmd() *cobra.Command {
	var req apiv1.CleanUpRequest
	cmd := &cobra.Command{
		Use:   "clean-up",
		Short: "Delete unused releases and stemcells (all but the 2 newest unused of each), old orphaned disks and old task logs",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if !a.g.NonInter && !a.g.JSON {
				q := "Delete unused releases and stemcells, orphaned disks older than 5 days and task logs older than 30 days?"
				if req.All {
					q = "Delete every unused release and stemcell, every orphaned disk and task logs older than 30 days?"
				}
				if ok, err := a.confirm(q); err != nil || !ok {
					return err
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", "/v1/cleanup", req, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	cmd.Flags().BoolVar(&req.All, "all", false, "every unused release and stemcell version and every orphaned disk, whatever their age")
	return cmd
}
