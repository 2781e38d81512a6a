package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// MigrateStateOptions are `director migrate-state`'s flags.
type MigrateStateOptions struct {
	From, To     string
	VariablesKey string
	Force        bool
	// The etcd side's connection.
	Prefix                    string
	CAFile, CertFile, KeyFile string
	MaxTxnOps                 int
}

func (a *app) migrateStateCmd() *cobra.Command {
	var o MigrateStateOptions
	cmd := &cobra.Command{
		Use:   "migrate-state --from bbolt:PATH|etcd:URL[,URL] --to bbolt:PATH|etcd:URL[,URL]",
		Short: "Copy the director's state between a bbolt file and an etcd cluster",
		Long: `Copy every record of the director's state from one backend to the other,
byte for byte (sealed variables, links and cpi configs stay sealed), then
verify the copy record by record and by unsealing every sealed value.

Stop the director first: nothing may write to either side meanwhile. The
target must be empty unless --force (which removes what it holds first).
Both sides use the same variables key (--variables-key, default: the bbolt
file's PATH.key); keep it, it is not copied into etcd.

  director migrate-state --from bbolt:/var/lib/compleat/state.db \
    --to etcd:https://10.0.0.11:2379,https://10.0.0.12:2379 \
    --ca-file etcd-ca.crt --cert-file client.crt --key-file client.key`,
		Args: args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			return a.migrateState(o)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&o.From, "from", "", "the source: bbolt:PATH or etcd:URL[,URL...]")
	f.StringVar(&o.To, "to", "", "the target: bbolt:PATH or etcd:URL[,URL...]")
	f.StringVar(&o.VariablesKey, "variables-key", "", "the 32-byte variables key file (default: PATH.key of the bbolt side)")
	f.BoolVar(&o.Force, "force", false, "copy over a target that holds records (they are removed first)")
	f.StringVar(&o.Prefix, "prefix", "/compleat/", "etcd: the key prefix of the state")
	f.StringVar(&o.CAFile, "ca-file", "", "etcd: the CA of the members")
	f.StringVar(&o.CertFile, "cert-file", "", "etcd: the client certificate")
	f.StringVar(&o.KeyFile, "key-file", "", "etcd: the client certificate's key")
	f.IntVar(&o.MaxTxnOps, "max-txn-ops", 128, "etcd: the cluster's --max-txn-ops")
	return cmd
}

// StateSide is one side of migrate-state: a bbolt file or an etcd
// cluster's prefix.
type StateSide struct {
	Backend string // bbolt or etcd
	// Path is the bbolt file.
	Path string
	// The etcd cluster and where the state is in it.
	Endpoints                 []string
	Prefix                    string
	CAFile, CertFile, KeyFile string
	MaxTxnOps                 int
}

// StateMigrator is implemented by Tools that can open the director's state
// (the director binary's; the CLI alone does not link the store): it copies
// every record from one side to the other and verifies the copy, and
// returns how many records and sequences it copied. A target that holds
// records is refused (a usage error) unless force.
type StateMigrator interface {
	MigrateState(from, to StateSide, variablesKey string, force bool) (records, sequences int, err error)
}

func parseStateSide(flag, spec string, o MigrateStateOptions) (StateSide, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if spec == "" {
		return StateSide{}, fmt.Errorf("--%s: required (bbolt:PATH or etcd:URL[,URL...])", flag)
	}
	if !ok || rest == "" {
		return StateSide{}, fmt.Errorf("--%s %q: want bbolt:PATH or etcd:URL[,URL...]", flag, spec)
	}
	switch kind {
	case "bbolt":
		return StateSide{Backend: kind, Path: rest}, nil
	case "etcd":
		eps := strings.Split(rest, ",")
		for _, e := range eps {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
				return StateSide{}, fmt.Errorf("--%s: etcd endpoint %q: want https://HOST:PORT", flag, e)
			}
		}
		if !strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/") {
			return StateSide{}, fmt.Errorf("--prefix %q: want /NAME/ (starting and ending with /)", o.Prefix)
		}
		if (o.CertFile == "") != (o.KeyFile == "") {
			return StateSide{}, errors.New("--cert-file and --key-file go together")
		}
		if o.MaxTxnOps < 2 {
			return StateSide{}, fmt.Errorf("--max-txn-ops %d: want at least 2", o.MaxTxnOps)
		}
		return StateSide{Backend: kind, Endpoints: eps, Prefix: o.Prefix,
			CAFile: o.CAFile, CertFile: o.CertFile, KeyFile: o.KeyFile, MaxTxnOps: o.MaxTxnOps}, nil
	default:
		return StateSide{}, fmt.Errorf("--%s %q: unknown backend %q (bbolt, etcd)", flag, spec, kind)
	}
}

func (a *app) migrateState(o MigrateStateOptions) error {
	from, err := parseStateSide("from", o.From, o)
	if err != nil {
		return Usage(err)
	}
	to, err := parseStateSide("to", o.To, o)
	if err != nil {
		return Usage(err)
	}
	if from.Backend == to.Backend && from.Path == to.Path && strings.Join(from.Endpoints, ",") == strings.Join(to.Endpoints, ",") {
		return Usage(errors.New("--from and --to name the same state"))
	}
	key := o.VariablesKey
	switch {
	case key != "":
	case from.Backend == "bbolt":
		key = from.Path + ".key"
	case to.Backend == "bbolt":
		key = to.Path + ".key"
	}
	if key == "" {
		return Usage(errors.New("--variables-key: required between two etcd clusters"))
	}
	if _, err := os.Stat(key); err != nil {
		return Usage(fmt.Errorf("variables key: %w (the source's data is sealed with it)", err))
	}
	m, ok := a.d.Tools.(StateMigrator)
	if !ok {
		return errors.New("migrate-state: this build cannot open the director's state")
	}
	records, sequences, err := m.MigrateState(from, to, key, o.Force)
	if err != nil {
		return err
	}
	if a.g.JSON {
		return json.NewEncoder(a.d.Stdout).Encode(map[string]any{"from": o.From, "to": o.To, "records": records, "sequences": sequences})
	}
	fmt.Fprintf(a.d.Stdout, "Copied %d records and %d sequences from %s to %s (verified)\n", records, sequences, o.From, o.To)
	return nil
}
