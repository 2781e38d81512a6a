package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"sort"
	"strings"
	"time"
)

// event is a task event as `director --json task N` prints it.
type event struct {
	Time  time.Time `json:"time"`
	Stage string    `json:"stage"`
	Step  string    `json:"step"`
	State string    `json:"state"`
	Error string    `json:"error"`
	Data  struct {
		Text string `json:"text"`
	} `json:"data"`
}

// parseEvents reads the JSON documents of a task's event stream, skipping
// documents that are not events.
func parseEvents(raw []byte) ([]event, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var out []event
	for {
		var e event
		err := dec.Decode(&e)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if e.Stage != "" {
			out = append(out, e)
		}
	}
}

// span is one step's start and end.
type span struct {
	stage, step string
	start, end  time.Time
	failed      bool
}

func (s span) d() time.Duration { return s.end.Sub(s.start) }

// spans pairs each step's "started" event with its "finished" or "failed".
func spans(evs []event) []span {
	open := map[string]time.Time{}
	var out []span
	for _, e := range evs {
		key := e.Stage + "\x00" + e.Step
		switch e.State {
		case "started":
			open[key] = e.Time
		case "finished", "failed":
			if t, ok := open[key]; ok {
				out = append(out, span{stage: e.Stage, step: e.Step, start: t, end: e.Time, failed: e.State == "failed"})
				delete(open, key)
			}
		}
	}
	return out
}

// bound is the schedule's lower bound for one deploy task, and how it was
// computed.
type bound struct {
	total time.Duration
	// batches is the number of sequential batches of "Updating instance",
	// over all groups.
	batches int
	// perGroup is each group's shortest instance update.
	perGroup map[string]time.Duration
	// parallel is the time of the stages that run their steps at once:
	// the longest step of each.
	parallel time.Duration
	// compile is the measured span of package compilation.
	compile time.Duration
}

// updateStage names the stage the updater schedules batch by batch.
const updateStage = "Updating instance"

// lowerBound computes, from a task's events, the shortest time in which
// any schedule respecting the manifest's canaries and max_in_flight could
// have carried the deploy out, given the work each step measurably took:
//
//   - each instance group's updates form sequential batches (a batch
//     starts when the previous one has finished); no batch can take less
//     than the group's fastest single instance update, so a group costs at
//     least batches × its fastest instance update; a batch that failed
//     costs its failed update, which ends only with the watch time;
//   - stages whose steps run at once (creating missing VMs, deleting
//     instances, post-deploy) cost at least their longest step;
//   - compilation counts at its measured span (its own schedule has its
//     own bound, see docs/deploy.md).
//
// Planning, rendering and the CLI's round trips are not in the bound: they
// are what the ratio wall / bound exposes, with any scheduling slack.
func lowerBound(evs []event) bound {
	b := bound{perGroup: map[string]time.Duration{}}
	byGroup := map[string][]span{}
	stageMax := map[string]time.Duration{}
	var cStart, cEnd time.Time
	for _, s := range spans(evs) {
		switch {
		case s.stage == updateStage:
			g, _, _ := strings.Cut(s.step, "/")
			byGroup[g] = append(byGroup[g], s)
		case strings.HasPrefix(s.stage, "Compiling"):
			if cStart.IsZero() || s.start.Before(cStart) {
				cStart = s.start
			}
			if s.end.After(cEnd) {
				cEnd = s.end
			}
		default:
			stageMax[s.stage] = max(stageMax[s.stage], s.d())
		}
	}
	for _, d := range stageMax {
		b.parallel += d
	}
	if !cStart.IsZero() {
		b.compile = cEnd.Sub(cStart)
	}
	for g, ss := range byGroup {
		cost, n, fastest := batchesOf(ss)
		b.batches += n
		b.perGroup[g] = fastest
		b.total += cost
	}
	b.total += b.parallel + b.compile
	return b
}

// batchesOf splits one group's instance updates into sequential batches
// (a new batch starts at or after the end of an instance of the current
// one) and returns the group's share of the bound: every batch that
// succeeded costs the group's fastest successful update; a batch with a
// failed instance costs its shortest failed update (a failure is declared
// only at the end of the watch time, so no schedule ends it sooner). It
// also returns the number of batches and the fastest successful update.
func batchesOf(ss []span) (cost time.Duration, n int, fastest time.Duration) {
	if len(ss) == 0 {
		return 0, 0, 0
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].start.Before(ss[j].start) })
	type batch struct {
		end    time.Time // earliest end
		failed time.Duration
	}
	var bs []batch
	for _, s := range ss {
		if len(bs) == 0 || !s.start.Before(bs[len(bs)-1].end) {
			bs = append(bs, batch{end: s.end})
		}
		b := &bs[len(bs)-1]
		if s.end.Before(b.end) {
			b.end = s.end
		}
		if s.failed {
			if b.failed == 0 || s.d() < b.failed {
				b.failed = s.d()
			}
		} else if fastest == 0 || s.d() < fastest {
			fastest = s.d()
		}
	}
	for _, b := range bs {
		if b.failed > 0 {
			cost += b.failed
		} else {
			cost += fastest
		}
	}
	return cost, len(bs), fastest
}

// infoNotes returns the notes of "info" events that carry one (such as a
// fallback from create-swap-delete), without the manifest diff and plan.
func infoNotes(evs []event) []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range evs {
		if e.State != "info" || e.Stage == "Manifest diff" || e.Stage == "Plan" {
			continue
		}
		note := e.Data.Text
		if note == "" {
			note = e.Step
		}
		note = e.Stage + ": " + strings.TrimSpace(note)
		if !seen[note] {
			seen[note] = true
			out = append(out, note)
		}
	}
	return out
}
