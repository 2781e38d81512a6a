package plan

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/compleat/compleat/director/update"
)

// Verb is a lifecycle command an operator runs on deployed instances
// (director recreate|restart|stop|start). Verbs are planned here like
// deploys: Lifecycle turns one into a rollout and the steps the executor
// carries out for each instance, so the executor switches on no mode.
type Verb string

// The lifecycle verbs.
const (
	VerbRecreate Verb = "recreate"
	VerbRestart  Verb = "restart"
	VerbStop     Verb = "stop"
	VerbStopHard Verb = "stop-hard" // stop --hard: the VM is deleted, the disk kept
	VerbStart    Verb = "start"
)

// Instance states recorded for an instance (store.Instance.State).
const (
	StateStarted  = "started"
	StateStopped  = "stopped"  // processes stopped, VM kept
	StateDetached = "detached" // VM deleted, persistent disk kept (stop --hard)
)

// ApplyWhen says when an instance's apply spec is sent.
type ApplyWhen int

// When to apply.
const (
	ApplyAlways ApplyWhen = iota // every updated instance (deploys)
	ApplyFresh                   // only to a VM this run created (start, restart, recreate)
	ApplyNever                   // stop
)

// Steps are the steps of an instance's update that the executor carries
// out; the updater (director/update) decides their order and batching.
type Steps struct {
	// TakeDown runs pre-stop, drain and stop.
	TakeDown bool
	// Shutdown drains with type "shutdown" (the instance stays down or goes
	// away) rather than "update".
	Shutdown bool
	// Replace creates a new VM after RecreateVM deleted the old one; false
	// for stop --hard, which only deletes.
	Replace bool
	// PlannedDisk: a VM created gets the plan's disk (a new or replaced one
	// comes with UpdateDisk); otherwise the disk the instance's record
	// holds is attached.
	PlannedDisk bool
	// Disk carries out the plan's persistent disk change (UpdateDisk).
	Disk bool
	// Apply says when the apply spec is sent.
	Apply ApplyWhen
	// BringUp runs pre-start, start, the wait until running and post-start.
	BringUp bool
	// PostDeploy runs the post-deploy script.
	PostDeploy bool
	// RecordSpec records the plan's state as what the instance runs.
	RecordSpec bool
	// State is the state recorded once the instance is done ("" keeps it).
	State string
}

// DeploySteps are a deploy's steps for an instance: everything, except
// that an instance an operator stopped is updated but left stopped.
func DeploySteps(stopped bool) Steps {
	s := Steps{TakeDown: true, Replace: true, PlannedDisk: true, Disk: true, Apply: ApplyAlways,
		BringUp: !stopped, PostDeploy: true, RecordSpec: true, State: StateStarted}
	if stopped {
		s.State = ""
	}
	return s
}

// VerbSteps are a lifecycle verb's steps for each instance it touches.
func VerbSteps(v Verb) (Steps, error) {
	switch v {
	case VerbRecreate:
		return Steps{TakeDown: true, Replace: true, Apply: ApplyAlways, BringUp: true, RecordSpec: true, State: StateStarted}, nil
	case VerbRestart:
		return Steps{TakeDown: true, Replace: true, Apply: ApplyFresh, BringUp: true, State: StateStarted}, nil
	case VerbStart:
		return Steps{Replace: true, Apply: ApplyFresh, BringUp: true, State: StateStarted}, nil
	case VerbStop:
		return Steps{TakeDown: true, Shutdown: true, Apply: ApplyNever, State: StateStopped}, nil
	case VerbStopHard:
		return Steps{TakeDown: true, Shutdown: true, Apply: ApplyNever, State: StateDetached}, nil
	}
	return Steps{}, fmt.Errorf("unknown lifecycle verb %q (want recreate, restart, stop or start)", v)
}

// LifecyclePlan is a verb planned over a deployment.
type LifecyclePlan struct {
	Verb Verb
	// Rollout changes only the instances the verb acts on (nothing is
	// deleted), with the deployment's canary and batch rules.
	Rollout update.Rollout
	// Steps are the verb's steps for each instance it acts on, by id.
	Steps map[string]Steps
	// Matched counts the instances the target names that exist, including
	// those already in the state asked for.
	Matched int
	// Ignored names (group/id) the ignored instances the target covers
	// without naming them: a verb acts on an ignored instance only when it
	// is named by GROUP/ID.
	Ignored []string
}

// ErrNoMatch is returned when a target names no deployed instance.
var ErrNoMatch = errors.New("no matching instance")

// Lifecycle plans verb over p, the plan of the deployment's current
// manifest against its recorded state, for target ("" for every instance,
// GROUP, or GROUP/ID where ID is an instance id or index). states are the
// recorded instance states by id. Instances never deployed are left to a
// deploy; instances already in the state asked for are left alone, and so
// are ignored instances (Instance.Ignored) unless target names them.
func Lifecycle(p *Plan, verb Verb, target string, states map[string]string) (LifecyclePlan, error) {
	steps, err := VerbSteps(verb)
	if err != nil {
		return LifecyclePlan{}, err
	}
	down := verb == VerbStop || verb == VerbStopHard
	lp := LifecyclePlan{Verb: verb, Rollout: p.Rollout(), Steps: map[string]Steps{}}
	lp.Rollout.Delete = nil
	group, id, _ := strings.Cut(target, "/")
	for gi := range lp.Rollout.Groups {
		g := &lp.Rollout.Groups[gi]
		for ii := range g.Instances {
			ui := &g.Instances[ii]
			pi, _ := p.Instance(ui.ID)
			hit := group == "" || g.Name == group && (id == "" || id == ui.ID || id == strconv.Itoa(ui.Index))
			ui.Changes, ui.Recreate, ui.DiskChange, ui.New, ui.Surge = nil, false, false, false, false
			if !hit || !pi.Existing {
				continue // not targeted, or never deployed: a deploy creates it
			}
			if pi.VMCID == "" && down {
				continue // nothing runs: nothing to stop
			}
			if pi.Ignored && id == "" {
				lp.Ignored = append(lp.Ignored, pi.Name())
				continue
			}
			lp.Matched++
			switch state := states[ui.ID]; {
			case verb == VerbStart && state == StateStarted && pi.VMCID != "",
				verb == VerbStop && (state == StateStopped || state == StateDetached),
				verb == VerbStopHard && state == StateDetached:
				continue // already so
			}
			action := string(verb)
			if verb == VerbStopHard {
				action = "stop --hard"
			}
			ui.Changes = []string{action + " requested"}
			ui.New = pi.VMCID == ""
			ui.Recreate = !ui.New && (verb == VerbRecreate || verb == VerbStopHard)
			lp.Steps[ui.ID] = steps
		}
	}
	if target != "" && lp.Matched == 0 && len(lp.Ignored) == 0 {
		return lp, fmt.Errorf("no instance of deployment %s matches %q (%w)", p.Deployment, target, ErrNoMatch)
	}
	return lp, nil
}

// Format writes the lifecycle plan for golden tests and dry runs: each
// instance acted on, its change and its steps.
func (lp LifecyclePlan) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d matched\n", lp.Verb, lp.Matched)
	for _, name := range lp.Ignored {
		fmt.Fprintf(&b, "  %s: ignored, left alone\n", name)
	}
	for _, g := range lp.Rollout.Groups {
		for _, in := range g.Instances {
			if len(in.Changes) == 0 {
				continue
			}
			s := lp.Steps[in.ID]
			var what []string
			if in.New {
				what = append(what, "create-vm")
			}
			if s.TakeDown && !in.New {
				drain := "drain"
				if s.Shutdown {
					drain = "drain(shutdown)"
				}
				what = append(what, "pre-stop", drain, "stop")
			}
			if in.Recreate {
				what = append(what, "delete-vm")
				if s.Replace {
					what = append(what, "create-vm")
				}
			}
			switch s.Apply {
			case ApplyAlways:
				what = append(what, "apply")
			case ApplyFresh:
				if in.New || in.Recreate && s.Replace {
					what = append(what, "apply")
				}
			}
			if s.BringUp {
				what = append(what, "start")
			}
			if s.RecordSpec {
				what = append(what, "record-spec")
			}
			if s.State != "" {
				what = append(what, "state="+s.State)
			}
			fmt.Fprintf(&b, "  %s/%s (%s): %s\n", in.Group, in.ID, strings.Join(in.Changes, ", "), strings.Join(what, " "))
		}
	}
	return b.String()
}
