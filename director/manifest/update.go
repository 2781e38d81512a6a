package manifest

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Amount is a count of instances written either as a number (3) or as a
// percentage of an instance group's size ("25%").
type Amount struct {
	N       int  // the number, or the percentage when Percent is set
	Percent bool // N is a percentage
}

// Of resolves the amount against a group of total instances. A percentage
// rounds down but never below 1 when total and N are positive (BOSH's rule
// for max_in_flight); a plain number is returned as written.
func (a Amount) Of(total int) int {
	if !a.Percent {
		return a.N
	}
	v := total * a.N / 100
	if v < 1 && total > 0 && a.N > 0 {
		v = 1
	}
	return v
}

// String writes the amount as it appears in a manifest.
func (a Amount) String() string {
	if a.Percent {
		return strconv.Itoa(a.N) + "%"
	}
	return strconv.Itoa(a.N)
}

// MarshalText writes the amount as it appears in a manifest.
func (a Amount) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText reads "3" or "25%".
func (a *Amount) UnmarshalText(b []byte) error {
	v, err := parseAmount(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

func parseAmount(s string) (Amount, error) {
	s = strings.TrimSpace(s)
	pct := strings.HasSuffix(s, "%")
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(s, "%")))
	if err != nil || n < 0 {
		return Amount{}, fmt.Errorf("must be a number or a percentage like \"25%%\", not %q", s)
	}
	if pct && n > 100 {
		return Amount{}, fmt.Errorf("percentage must be between 0%% and 100%%, not %q", s)
	}
	return Amount{N: n, Percent: pct}, nil
}

// WatchTime is a range of milliseconds written "1000-60000" (or a single
// number, meaning min = max). The updater waits Min before its first check
// and gives up after Max.
type WatchTime struct {
	Min, Max time.Duration
}

// String writes the range in milliseconds as it appears in a manifest.
func (w WatchTime) String() string {
	if w.Min == w.Max {
		return strconv.FormatInt(w.Max.Milliseconds(), 10)
	}
	return fmt.Sprintf("%d-%d", w.Min.Milliseconds(), w.Max.Milliseconds())
}

// MarshalText writes the range as it appears in a manifest.
func (w WatchTime) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText reads "1000-60000" or "5000".
func (w *WatchTime) UnmarshalText(b []byte) error {
	v, err := parseWatchTime(string(b))
	if err != nil {
		return err
	}
	*w = v
	return nil
}

func parseWatchTime(s string) (WatchTime, error) {
	bad := fmt.Errorf("must be milliseconds (5000) or a range of milliseconds (\"1000-60000\"), not %q", s)
	lo, hi, isRange := strings.Cut(s, "-")
	min, err := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
	if err != nil || min < 0 {
		return WatchTime{}, bad
	}
	max := min
	if isRange {
		max, err = strconv.ParseInt(strings.TrimSpace(hi), 10, 64)
		if err != nil || max < 0 {
			return WatchTime{}, bad
		}
	}
	const limit = int64(7 * 24 * time.Hour / time.Millisecond)
	if min > limit || max > limit {
		return WatchTime{}, fmt.Errorf("must be at most a week (%d ms), not %q", limit, s)
	}
	if min > max {
		return WatchTime{}, fmt.Errorf("range %q has its minimum above its maximum", s)
	}
	return WatchTime{Min: time.Duration(min) * time.Millisecond, Max: time.Duration(max) * time.Millisecond}, nil
}

// VM strategies.
const (
	DeleteCreate     = "delete-create"
	CreateSwapDelete = "create-swap-delete"
)

// Update says how an instance group rolls out. The deployment's update block
// sets the defaults; an instance group's own block overrides single fields.
// InstanceGroup.Update always holds the merged, complete result.
type Update struct {
	Canaries        Amount    `json:"canaries"`
	MaxInFlight     Amount    `json:"max_in_flight"`
	CanaryWatchTime WatchTime `json:"canary_watch_time"`
	UpdateWatchTime WatchTime `json:"update_watch_time"`
	// Serial: the group waits for the groups before it (default true).
	Serial bool `json:"serial"`
	// VMStrategy is DeleteCreate (default) or CreateSwapDelete.
	VMStrategy string `json:"vm_strategy"`
	// MaxSurge (beyond BOSH): extra instances of the new version brought up
	// before old ones go down. Zero disables surge.
	MaxSurge Amount `json:"max_surge"`
	// AutoRollback (beyond BOSH): a failed canary or batch redeploys the
	// last successful manifest for the instances already touched.
	AutoRollback bool `json:"auto_rollback"`
}

// updateSpec is an update block as written: nil fields were not set.
type updateSpec struct {
	canaries, maxInFlight, maxSurge *Amount
	canaryWatch, updateWatch        *WatchTime
	serial, autoRollback            *bool
	vmStrategy                      *string
	present                         map[string]bool // fields written, valid or not
}

func (d *decoder) updateBlock(n *yaml.Node, path string) *updateSpec {
	u := &updateSpec{}
	amount := func(dst **Amount) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			v = resolve(v)
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!str") {
				d.errorf(v, p, "must be a number or a percentage like \"25%%\", not %s", kindName(v))
				return
			}
			a, err := parseAmount(v.Value)
			if err != nil {
				d.errorf(v, p, "%v", err)
				return
			}
			if a.N == 0 && strings.HasSuffix(p, "max_in_flight") {
				d.errorf(v, p, "must be at least 1 (or a non-zero percentage)")
				return
			}
			*dst = &a
		}
	}
	watch := func(dst **WatchTime) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			v = resolve(v)
			if v.Kind != yaml.ScalarNode || (v.Tag != "!!int" && v.Tag != "!!str") {
				d.errorf(v, p, "must be milliseconds or a range like \"1000-60000\", not %s", kindName(v))
				return
			}
			w, err := parseWatchTime(v.Value)
			if err != nil {
				d.errorf(v, p, "%v", err)
				return
			}
			*dst = &w
		}
	}
	flag := func(dst **bool) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) {
			b := d.boolean(v, p)
			*dst = &b
		}
	}
	u.present = d.object(n, path, fields{
		"canaries":          amount(&u.canaries),
		"max_in_flight":     amount(&u.maxInFlight),
		"max_surge":         amount(&u.maxSurge),
		"canary_watch_time": watch(&u.canaryWatch),
		"update_watch_time": watch(&u.updateWatch),
		"serial":            flag(&u.serial),
		"auto_rollback":     flag(&u.autoRollback),
		"vm_strategy": func(v *yaml.Node, p string) {
			s := d.str(v, p)
			if s != DeleteCreate && s != CreateSwapDelete {
				d.errorf(v, p, "must be %q or %q, not %q", DeleteCreate, CreateSwapDelete, s)
				return
			}
			u.vmStrategy = &s
		},
		// BOSH accepts this; the placement of a first deploy across AZs
		// is the planner's choice here, so it is read and ignored.
		"initial_deploy_az_update_strategy": nil,
	})
	return u
}

// merge applies the set fields of o over base.
func (u *updateSpec) merge(o *updateSpec) *updateSpec {
	if o == nil {
		return u
	}
	out := *u
	if o.canaries != nil {
		out.canaries = o.canaries
	}
	if o.maxInFlight != nil {
		out.maxInFlight = o.maxInFlight
	}
	if o.maxSurge != nil {
		out.maxSurge = o.maxSurge
	}
	if o.canaryWatch != nil {
		out.canaryWatch = o.canaryWatch
	}
	if o.updateWatch != nil {
		out.updateWatch = o.updateWatch
	}
	if o.serial != nil {
		out.serial = o.serial
	}
	if o.autoRollback != nil {
		out.autoRollback = o.autoRollback
	}
	if o.vmStrategy != nil {
		out.vmStrategy = o.vmStrategy
	}
	return &out
}

// resolved returns the complete Update and the names of required fields that
// are still unset.
func (u *updateSpec) resolved() (Update, []string) {
	out := Update{Serial: true, VMStrategy: DeleteCreate}
	var missing []string
	if u.canaries != nil {
		out.Canaries = *u.canaries
	} else {
		missing = append(missing, "canaries")
	}
	if u.maxInFlight != nil {
		out.MaxInFlight = *u.maxInFlight
	} else {
		missing = append(missing, "max_in_flight")
	}
	if u.canaryWatch != nil {
		out.CanaryWatchTime = *u.canaryWatch
	} else {
		missing = append(missing, "canary_watch_time")
	}
	if u.updateWatch != nil {
		out.UpdateWatchTime = *u.updateWatch
	} else {
		missing = append(missing, "update_watch_time")
	}
	if u.serial != nil {
		out.Serial = *u.serial
	}
	if u.autoRollback != nil {
		out.AutoRollback = *u.autoRollback
	}
	if u.vmStrategy != nil {
		out.VMStrategy = *u.vmStrategy
	}
	if u.maxSurge != nil {
		out.MaxSurge = *u.maxSurge
	}
	return out, missing
}
