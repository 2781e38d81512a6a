package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/apiv1"
)

// list fetches path; with --json it prints the document as is, else decodes
// it into v and calls render.
func (a *app) list(ctx context.Context, c *client, path string, v any, render func(w io.Writer)) error {
	raw, err := c.getRaw(ctx, path)
	if err != nil {
		return err
	}
	if a.g.JSON {
		return printJSON(a.d.Stdout, raw)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	render(a.d.Stdout)
	return nil
}

// listEach is list for a per-deployment listing (instances, vms): the -d
// deployment's, or without -d every deployment's in turn, each table under
// its deployment's name; --json prints one array of them all.
func (a *app) listEach(ctx context.Context, c *client, pathOf func(deployment string) string, v any, render func(w io.Writer)) error {
	if a.g.Deployment != "" {
		return a.list(ctx, c, pathOf(a.g.Deployment), v, render)
	}
	var ds []struct {
		Name string `json:"name"`
	}
	if err := c.do(ctx, "GET", "/v1/deployments", nil, &ds); err != nil {
		return err
	}
	all := []json.RawMessage{}
	for i, d := range ds {
		path := pathOf(d.Name)
		raw, err := c.getRaw(ctx, path)
		if err != nil {
			return fmt.Errorf("deployment %s: %w", d.Name, err)
		}
		if a.g.JSON {
			var items []json.RawMessage
			if err := json.Unmarshal(raw, &items); err != nil {
				return fmt.Errorf("decode %s: %w", path, err)
			}
			all = append(all, items...)
			continue
		}
		if err := json.Unmarshal(raw, v); err != nil {
			return fmt.Errorf("decode %s: %w", path, err)
		}
		if i > 0 {
			fmt.Fprintln(a.d.Stdout)
		}
		fmt.Fprintf(a.d.Stdout, "Deployment %s\n\n", d.Name)
		render(a.d.Stdout)
	}
	if a.g.JSON {
		raw, err := json.Marshal(all)
		if err != nil {
			return err
		}
		return printJSON(a.d.Stdout, raw)
	}
	if len(ds) == 0 {
		fmt.Fprintln(a.d.Stdout, "No deployments.")
	}
	return nil
}

func printJSON(w io.Writer, raw json.RawMessage) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func compact(raw json.RawMessage) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}

func (a *app) serveCmd() *cobra.Command {
	var o ServeOptions
	cmd := &cobra.Command{
		Use:   "serve (--dev [--data DIR] [--listen ADDR] | --config director.yml)",
		Short: "Run the director server",
		Long: `Run the director server until SIGINT or SIGTERM.

--dev starts a ready local director: the local CPI, state and blobs under DIR
(default ./.compleat), loopback only, a generated admin token and CA. It prints
the target and writes DIR/env, a shell file setting DIRECTOR_TARGET,
DIRECTOR_TOKEN and DIRECTOR_CA_CERT.

--config runs a production director from director.yml (see docs/operations.md).`,
		Args: args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if o.Dev == (o.Config != "") {
				return Usage(errors.New("serve: pass exactly one of --dev and --config"))
			}
			if o.Config != "" && (cmd.Flags().Changed("data") || cmd.Flags().Changed("listen")) {
				return Usage(errors.New("serve: --data and --listen go with --dev; set data_dir and listen in the config file"))
			}
			if a.d.Serve == nil {
				return Failed(errors.New("this build has no server"))
			}
			return a.d.Serve(cmd.Context(), o)
		}),
	}
	cmd.Flags().BoolVar(&o.Dev, "dev", false, "local development director")
	cmd.Flags().StringVar(&o.Data, "data", ".compleat", "data directory (--dev)")
	cmd.Flags().StringVar(&o.Listen, "listen", "127.0.0.1:25555", "API listen address (--dev; loopback only)")
	cmd.Flags().StringVar(&o.Config, "config", "", "director.yml (production)")
	return cmd
}

func (a *app) createReleaseCmd() *cobra.Command {
	var o CreateReleaseOptions
	cmd := &cobra.Command{
		Use:   "create-release DIR",
		Short: "Build a release tarball from a release source directory",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, version, tarball, err := a.d.Tools.CreateRelease(argv[0], o)
			if err != nil {
				return Usage(err)
			}
			if a.g.JSON {
				return json.NewEncoder(a.d.Stdout).Encode(map[string]string{"name": name, "version": version, "tarball": tarball})
			}
			fmt.Fprintf(a.d.Stdout, "Release %s/%s\nTarball %s\n", name, version, tarball)
			return nil
		}),
	}
	cmd.Flags().StringVar(&o.Tarball, "tarball", "", "where to write the tarball")
	cmd.Flags().StringVar(&o.Version, "version", "", "release version (default: the next dev version)")
	cmd.Flags().StringVar(&o.Name, "name", "", "release name (default: config/final.yml's, else the directory's)")
	return cmd
}

func (a *app) inspectReleaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect-release FILE",
		Short: "Verify a release tarball and list its jobs and packages",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			if err := a.d.Tools.InspectRelease(a.d.Stdout, argv[0], a.g.JSON); err != nil {
				return Usage(err)
			}
			return nil
		}),
	}
}

func (a *app) createStemcellCmd() *cobra.Command {
	var o CreateStemcellOptions
	cmd := &cobra.Command{
		Use:   "create-stemcell --agent BIN --tarball OUT | --light --format F --cloud-property K=V --tarball OUT",
		Short: "Build the local stemcell (a tarball holding the agent binary) or a light stemcell naming a cloud's image",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			switch {
			case o.Tarball == "":
				return Usage(errors.New("create-stemcell: --tarball is required"))
			case o.Light && o.Agent != "":
				return Usage(errors.New("create-stemcell: a light stemcell holds no agent: drop --agent or --light"))
			case o.Light && (len(o.Formats) == 0 || len(o.CloudProperties) == 0):
				return Usage(errors.New("create-stemcell --light: needs --format (e.g. aws-light) and --cloud-property naming the image (e.g. ami_id=ami-...)"))
			case !o.Light && o.Agent == "":
				return Usage(errors.New("create-stemcell: --agent is required (or --light)"))
			}
			if err := a.d.Tools.CreateStemcell(o); err != nil {
				return Usage(err)
			}
			if a.g.JSON {
				sum, size, err := fileDigest(o.Tarball)
				if err != nil {
					return err
				}
				return printJSONValue(a.d.Stdout, map[string]any{"tarball": o.Tarball, "sha256": sum, "size": size, "light": o.Light})
			}
			fmt.Fprintf(a.d.Stdout, "Stemcell %s\n", o.Tarball)
			return nil
		}),
	}
	cmd.Flags().StringVar(&o.Agent, "agent", "", "the agent binary")
	cmd.Flags().StringVar(&o.Tarball, "tarball", "", "output file")
	cmd.Flags().StringVar(&o.Name, "name", "", "stemcell name (default compleat-local)")
	cmd.Flags().StringVar(&o.Version, "version", "", "stemcell version (default 1)")
	cmd.Flags().StringVar(&o.OS, "os", "", "operating system (default linux)")
	cmd.Flags().BoolVar(&o.Light, "light", false, "a light stemcell: no image, cloud_properties name the cloud's image")
	cmd.Flags().StringArrayVar(&o.Formats, "format", nil, "a further stemcell format, e.g. aws-light (repeatable)")
	cmd.Flags().StringArrayVar(&o.CloudProperties, "cloud-property", nil, "KEY=VALUE in cloud_properties; a dotted key nests (repeatable)")
	return cmd
}

func addInterpolateFlags(cmd *cobra.Command, o *InterpolateOptions) {
	cmd.Flags().StringArrayVarP(&o.Vars, "var", "v", nil, "variable name=value (repeatable)")
	cmd.Flags().StringArrayVarP(&o.VarsFiles, "vars-file", "l", nil, "YAML file of variables (repeatable)")
	cmd.Flags().StringArrayVarP(&o.OpsFiles, "ops-file", "o", nil, "ops file (repeatable, applied in order)")
}

func (a *app) interpolateCmd() *cobra.Command {
	var o InterpolateOptions
	cmd := &cobra.Command{
		Use:   "interpolate FILE",
		Short: "Apply ops files and variables to a YAML file and print it",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			out, err := a.d.Tools.Interpolate(cmd.Context(), argv[0], a.warned(o))
			if err != nil {
				return Usage(err)
			}
			if a.g.JSON {
				// The document itself, as JSON.
				var doc any
				if err := yaml.Unmarshal(out, &doc); err != nil {
					return fmt.Errorf("interpolate --json: %w", err)
				}
				return printJSONValue(a.d.Stdout, doc)
			}
			_, err = a.d.Stdout.Write(out)
			return err
		}),
	}
	addInterpolateFlags(cmd, &o)
	cmd.Flags().BoolVar(&o.Strict, "var-errs", false, "fail on any variable nothing resolves")
	cmd.Flags().StringVar(&o.VarsStore, "vars-store", "", "YAML `FILE` of variables that receives a generated value for each variable the document declares and it lacks")
	return cmd
}

// upload sends a file to path with progress on stderr, then follows the task.
func (a *app) upload(ctx context.Context, c *client, path, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return Usage(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	body := newProgress(f, st.Size(), filepath.Base(file), a.d.Stderr, a.d.IsTerminal(a.d.Stderr))
	resp, err := c.send(ctx, "POST", path, body, "application/gzip")
	body.done()
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var t apiv1.Task
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return fmt.Errorf("decode task: %w", err)
	}
	return a.follow(ctx, c, t.ID)
}

func (a *app) uploadReleaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "upload-release FILE|DIR",
		Short: "Upload a release tarball, or build one from a source directory and upload it",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			file := argv[0]
			st, err := os.Stat(file)
			if err != nil {
				return Usage(err)
			}
			if st.IsDir() {
				tmp, err := os.MkdirTemp("", "release-*")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				name, version, tarball, err := a.d.Tools.CreateRelease(file, CreateReleaseOptions{Tarball: filepath.Join(tmp, "release.tgz")})
				if err != nil {
					return Usage(err)
				}
				fmt.Fprintf(a.d.Stderr, "Built release %s/%s from %s\n", name, version, file)
				file = tarball
			}
			return a.upload(cmd.Context(), c, "/v1/releases", file)
		}),
	}
}

func (a *app) uploadStemcellCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "upload-stemcell FILE",
		Short: "Upload a stemcell to every CPI that supports its format",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.upload(cmd.Context(), c, "/v1/stemcells", argv[0])
		}),
	}
}

func (a *app) updateConfigCmd(typ string) *cobra.Command {
	var name string
	var o InterpolateOptions
	cmd := &cobra.Command{
		Use:   "update-" + typ + "-config FILE",
		Short: "Store a new version of the " + typ + " config",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			raw, err := os.ReadFile(argv[0])
			if err != nil {
				return Usage(err)
			}
			if len(o.Vars)+len(o.VarsFiles)+len(o.OpsFiles) > 0 {
				// Ops files and -v/-l apply here; references they leave
				// stay for the director (a runtime config's, at deploy).
				if raw, err = a.d.Tools.Interpolate(cmd.Context(), argv[0], a.warned(o)); err != nil {
					return Usage(err)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var res struct {
				Config  apiv1.Config `json:"config"`
				Changed bool         `json:"changed"`
			}
			req := map[string]string{"type": typ, "name": name, "content": string(raw), "file": filepath.Base(argv[0])}
			if err := c.do(cmd.Context(), "POST", "/v1/configs", req, &res); err != nil {
				return err
			}
			if a.g.JSON {
				return json.NewEncoder(a.d.Stdout).Encode(res)
			}
			if res.Changed {
				fmt.Fprintf(a.d.Stdout, "Updated %s config %q (id %d)\n", typ, res.Config.Name, res.Config.ID)
			} else {
				fmt.Fprintf(a.d.Stdout, "No changes: %s config %q is already id %d\n", typ, res.Config.Name, res.Config.ID)
			}
			return nil
		}),
	}
	if typ != "cpi" {
		cmd.Flags().StringVar(&name, "name", "default", "config name")
	}
	addInterpolateFlags(cmd, &o)
	return cmd
}

func (a *app) showConfigCmd(typ string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   typ + "-config",
		Short: "Print the " + typ + " config in force",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var cfgs []apiv1.Config
			if err := c.do(cmd.Context(), "GET", "/v1/configs?type="+typ, nil, &cfgs); err != nil {
				return err
			}
			for _, cfg := range cfgs {
				if cfg.Name != name {
					continue
				}
				if a.g.JSON {
					return json.NewEncoder(a.d.Stdout).Encode(cfg)
				}
				_, err := io.WriteString(a.d.Stdout, cfg.Content)
				return err
			}
			return Failed(fmt.Errorf("no %s config named %q: set one with update-%s-config", typ, name, typ))
		}),
	}
	cmd.Flags().StringVar(&name, "name", "default", "config name")
	return cmd
}

func (a *app) configsCmd() *cobra.Command {
	var typ string
	var all bool
	cmd := &cobra.Command{
		Use:   "configs",
		Short: "List configs (the latest version of each, --all for every version)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			q := "/v1/configs?type=" + typ
			if all {
				q += "&all=true"
			}
			var cfgs []apiv1.Config
			return a.list(cmd.Context(), c, q, &cfgs, func(w io.Writer) {
				tw := table(w, "ID", "Type", "Name", "Created")
				for _, cfg := range cfgs {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", cfg.ID, cfg.Type, cfg.Name, stamp(cfg.CreatedAt))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d configs\n", len(cfgs))
			})
		}),
	}
	cmd.Flags().StringVar(&typ, "type", "", "cloud, runtime or cpi")
	cmd.Flags().BoolVar(&all, "all", false, "every version")
	return cmd
}

func (a *app) deploymentsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "deployments",
		Short: "List deployments",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var ds []apiv1.Deployment
			return a.list(cmd.Context(), c, "/v1/deployments", &ds, func(w io.Writer) {
				tw := table(w, "Name", "Releases", "Stemcells", "Updated")
				for _, d := range ds {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Name, dash(strings.Join(d.Releases, ", ")), dash(strings.Join(d.Stemcells, ", ")), stamp(d.UpdatedAt))
				}
				tw.Flush()
				for _, d := range ds {
					if len(d.StaleLinks) > 0 {
						fmt.Fprintf(w, "\n%s: links from other deployments changed since its last deploy (%s); deploy it again to pick them up\n", d.Name, strings.Join(d.StaleLinks, ", "))
					}
				}
				fmt.Fprintf(w, "\n%d deployments\n", len(ds))
			})
		}),
	}
}

func (a *app) backupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a consistent copy of the director's state file to FILE",
		Long: `Write a consistent copy of the director's state file to FILE.

Generated variables in it are sealed with the key in the director's data
directory (state.db.key): keep a copy of that key with your backups.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.send(cmd.Context(), "GET", "/v1/backup", nil, "")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			tmp := argv[0] + ".partial"
			f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return Usage(err)
			}
			n, err := io.Copy(f, resp.Body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, argv[0])
			}
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("backup: %w", err)
			}
			if a.g.JSON {
				return json.NewEncoder(a.d.Stdout).Encode(map[string]any{"file": argv[0], "bytes": n})
			}
			fmt.Fprintf(a.d.Stdout, "Wrote %s (%d bytes)\n", argv[0], n)
			return nil
		}),
	}
}

func (a *app) infoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the director's version, your token's name and scopes, the CPIs, and which director leads (HA)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var info struct {
				Name, Version, User string
				Scopes, CPIs        []string
				Deploy              bool
				Director, Leader    string
			}
			return a.list(cmd.Context(), c, "/v1/info", &info, func(w io.Writer) {
				fmt.Fprintf(w, "Name     %s\nVersion  %s\nUser     %s (%s)\nCPIs     %s\nDeploy   %v\n",
					info.Name, info.Version, info.User, strings.Join(info.Scopes, ", "), dash(strings.Join(info.CPIs, ", ")), info.Deploy)
				if info.Director != "" {
					fmt.Fprintf(w, "Director %s\nLeader   %s\n", info.Director, dash(info.Leader))
				}
			})
		}),
	}
}

// printJSONValue prints v as one indented JSON document.
func printJSONValue(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fileDigest is a file's hex sha256 and size.
func fileDigest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}
