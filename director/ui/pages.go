package ui

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/store"
)

// DeploymentRow is one line of the deployments page.
type DeploymentRow struct {
	store.Deployment
	Instances int
	ByState   []StateCount
	Last      *store.Task
}

// StateCount is how many instances are in a state.
type StateCount struct {
	State string
	N     int
}

func (h *Handler) deployments(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	var deps []store.Deployment
	if err := h.call(ctx, s, http.MethodGet, "/v1/deployments", &deps); err != nil {
		return "", nil, err
	}
	var tasks []store.Task
	if err := h.call(ctx, s, http.MethodGet, "/v1/tasks?limit=500", &tasks); err != nil {
		return "", nil, err
	}
	rows := make([]DeploymentRow, 0, len(deps))
	for _, d := range deps {
		var insts []store.Instance
		if err := h.call(ctx, s, http.MethodGet, "/v1/deployments/"+url.PathEscape(d.Name)+"/instances", &insts); err != nil {
			return "", nil, err
		}
		row := DeploymentRow{Deployment: d, Instances: len(insts), ByState: countStates(insts, func(i store.Instance) string { return i.State })}
		for i := range tasks {
			if tasks[i].Deployment == d.Name && tasks[i].Type == "deploy" {
				row.Last = &tasks[i]
				break
			}
		}
		rows = append(rows, row)
	}
	return "deployments", rows, nil
}

func countStates[T any](xs []T, state func(T) string) []StateCount {
	m := map[string]int{}
	for _, x := range xs {
		st := state(x)
		if st == "" {
			st = "unknown"
		}
		m[st]++
	}
	out := make([]StateCount, 0, len(m))
	for st, n := range m {
		out = append(out, StateCount{st, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].State < out[j].State })
	return out
}

// InstanceRow is one instance of the deployment page: its record, its
// addresses and what its latest heartbeat said.
type InstanceRow struct {
	store.Instance
	IPs       []string
	Health    string
	JobState  string
	Heartbeat float64 // seconds since the last heartbeat
	Jobs      []protocol.JobState
	Vitals    *protocol.Vitals
	Reason    string
}

// GroupRow is an instance group with its instances.
type GroupRow struct {
	Name      string
	Instances []InstanceRow
	ByState   []StateCount
}

// PSLimit is the largest deployment whose page asks every agent for its
// processes.
const PSLimit = 100

// DeploymentPage is the deployment page's data.
type DeploymentPage struct {
	Deployment store.Deployment
	Groups     []GroupRow
	Variables  []VariableRow
	Tasks      []store.Task
	Running    *store.Task
	Paused     bool // the last deploy ended paused: it may be resumed
	HealthNote string
}

// PageTitle names the deployment.
func (p DeploymentPage) PageTitle() string { return "Deployment " + p.Deployment.Name }

// PageTitle names the task.
func (p TaskPage) PageTitle() string { return fmt.Sprintf("Task #%d", p.Task.ID) }

// VariableRow is a variable as the console shows it: never its value.
type VariableRow struct{ Name, Type string }

type instanceView struct {
	store.Instance
	IPs []string `json:"ips"`
}

type instanceHealth struct {
	ID            string              `json:"id"`
	Group         string              `json:"group"`
	Status        string              `json:"status"`
	HeartbeatAge  float64             `json:"heartbeat_age_s"`
	LastHeartbeat time.Time           `json:"last_heartbeat"`
	JobState      string              `json:"job_state"`
	Jobs          []protocol.JobState `json:"jobs"`
	Vitals        *protocol.Vitals    `json:"vitals"`
	Reason        string              `json:"reason"`
}

func (h *Handler) deployment(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	name := r.PathValue("name")
	esc := url.PathEscape(name)
	var p DeploymentPage
	if err := h.call(ctx, s, http.MethodGet, "/v1/deployments/"+esc, &p.Deployment); err != nil {
		return "", nil, err
	}
	var insts []instanceView
	if err := h.call(ctx, s, http.MethodGet, "/v1/deployments/"+esc+"/instances", &insts); err != nil {
		return "", nil, err
	}
	// Process states come from the agents themselves (instances?ps=true,
	// 16 asked at a time) for a deployment of up to PSLimit instances;
	// beyond that the page keeps to what heartbeats said.
	procs := map[string][]protocol.JobState{}
	if len(insts) <= PSLimit {
		var ps []struct {
			ID         string          `json:"id"`
			AgentState *protocol.State `json:"agent_state"`
		}
		if err := h.call(ctx, s, http.MethodGet, "/v1/deployments/"+esc+"/instances?ps=true", &ps); err == nil {
			for _, x := range ps {
				if x.AgentState != nil {
					procs[x.ID] = x.AgentState.Jobs
				}
			}
		}
	}
	var hs []instanceHealth
	if err := h.call(ctx, s, http.MethodGet, "/v1/deployments/"+esc+"/health", &hs); err != nil {
		p.HealthNote = "No heartbeats: " + err.Error()
	}
	byID := map[string]instanceHealth{}
	for _, x := range hs {
		byID[x.ID] = x
	}
	groups := map[string]*GroupRow{}
	var order []string
	for _, i := range insts {
		g := groups[i.Group]
		if g == nil {
			g = &GroupRow{Name: i.Group}
			groups[i.Group] = g
			order = append(order, i.Group)
		}
		row := InstanceRow{Instance: i.Instance, IPs: i.IPs}
		if x, ok := byID[i.ID]; ok {
			row.Health, row.JobState, row.Jobs, row.Vitals, row.Reason = x.Status, x.JobState, x.Jobs, x.Vitals, x.Reason
			row.Heartbeat = x.HeartbeatAge
		}
		if jobs, ok := procs[i.ID]; ok {
			row.Jobs = jobs
		}
		g.Instances = append(g.Instances, row)
	}
	for _, n := range order {
		g := groups[n]
		sort.Slice(g.Instances, func(a, b int) bool { return g.Instances[a].Index < g.Instances[b].Index })
		g.ByState = countStates(g.Instances, func(i InstanceRow) string {
			if i.JobState != "" {
				return i.JobState
			}
			return i.State
		})
		p.Groups = append(p.Groups, *g)
	}
	var vars []store.Variable
	if err := h.call(ctx, s, http.MethodGet, "/v1/variables?deployment="+url.QueryEscape(name), &vars); err == nil {
		for _, v := range vars {
			// Names and types only: the value never reaches the page.
			p.Variables = append(p.Variables, VariableRow{Name: strings.TrimPrefix(v.Name, "/"+name+"/"), Type: v.Type})
		}
	}
	if err := h.call(ctx, s, http.MethodGet, "/v1/tasks?limit=10&deployment="+url.QueryEscape(name), &p.Tasks); err != nil {
		return "", nil, err
	}
	for i := range p.Tasks {
		if p.Tasks[i].Type != "deploy" {
			continue
		}
		if !p.Tasks[i].Finished() {
			p.Running = &p.Tasks[i]
		} else {
			p.Paused = strings.Contains(p.Tasks[i].Error, "rollout paused")
		}
		break
	}
	return "deployment", p, nil
}

// TasksPage is the tasks page's data.
type TasksPage struct {
	Tasks                   []store.Task
	State, Deployment, Type string
	Limit                   int
	States                  []string
	Deployments             []string
}

func (h *Handler) tasks(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	q := r.URL.Query()
	p := TasksPage{State: q.Get("state"), Deployment: q.Get("deployment"), Type: q.Get("type"), Limit: 50,
		States: []string{"running", store.TaskQueued, store.TaskProcessing, store.TaskDone, store.TaskError, store.TaskCancelled}}
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 && n <= 1000 {
		p.Limit = n
	}
	if p.State != "" && !slices.Contains(p.States, p.State) {
		p.State = ""
	}
	v := url.Values{}
	v.Set("limit", strconv.Itoa(p.Limit))
	if p.State != "" {
		v.Set("state", p.State)
	}
	if p.Deployment != "" {
		v.Set("deployment", p.Deployment)
	}
	if p.Type != "" {
		v.Set("limit", "1000")
	}
	var ts []store.Task
	if err := h.call(ctx, s, http.MethodGet, "/v1/tasks?"+v.Encode(), &ts); err != nil {
		return "", nil, err
	}
	for _, t := range ts {
		if p.Type != "" && t.Type != p.Type {
			continue
		}
		if len(p.Tasks) < p.Limit {
			p.Tasks = append(p.Tasks, t)
		}
	}
	var deps []store.Deployment
	if err := h.call(ctx, s, http.MethodGet, "/v1/deployments", &deps); err == nil {
		for _, d := range deps {
			p.Deployments = append(p.Deployments, d.Name)
		}
	}
	return "tasks", p, nil
}

// TaskPage is a task page's data; the events come live by SSE and are
// rendered server-side too (for a finished task, or without JavaScript).
type TaskPage struct {
	Task   store.Task
	Events []store.Event
	Diff   []DiffLine
	Bars   []Bar
	Span   float64 // seconds from the first event to the last
}

// DiffLine is a line of the manifest diff with its kind (+, -, space).
type DiffLine struct{ Kind, Text string }

// Bar is one instance's update in the rollout view.
type Bar struct {
	Name           string
	Canary         bool
	Batch          int
	State          string
	Start, Length  float64 // seconds from the first event
	LeftPct, WidPc float64
	Notes          []string
}

func (h *Handler) task(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return "", nil, &apiError{status: http.StatusBadRequest, msg: "task id is not a number"}
	}
	var p TaskPage
	if err := h.call(ctx, s, http.MethodGet, fmt.Sprintf("/v1/tasks/%d", id), &p.Task); err != nil {
		return "", nil, err
	}
	raw, err := h.text(ctx, s, fmt.Sprintf("/v1/tasks/%d/events", id))
	if err != nil {
		return "", nil, err
	}
	sc := bufio.NewScanner(strings.NewReader(raw))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e store.Event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			p.Events = append(p.Events, e)
		}
	}
	p.Diff = diffOf(p.Events)
	p.Bars, p.Span = bars(p.Events)
	return "task", p, nil
}

// diffOf finds the manifest diff the deploy recorded (already redacted).
func diffOf(evs []store.Event) []DiffLine {
	for _, e := range evs {
		if e.Stage != "Manifest diff" {
			continue
		}
		var d struct {
			Text string `json:"text"`
		}
		json.Unmarshal(e.Data, &d)
		var out []DiffLine
		for _, l := range strings.Split(strings.TrimRight(d.Text, "\n"), "\n") {
			k := " "
			if strings.HasPrefix(l, "+") || strings.HasPrefix(l, "-") { // "+ ", "- " or "  "
				k = l[:1]
			}
			out = append(out, DiffLine{k, l})
		}
		return out
	}
	return nil
}

// bars turns the "Updating instance" events into one timeline bar per
// instance (the same computation app.js does live).
func bars(evs []store.Event) ([]Bar, float64) {
	if len(evs) == 0 {
		return nil, 0
	}
	t0 := evs[0].Time
	end := evs[len(evs)-1].Time.Sub(t0).Seconds()
	idx := map[string]int{}
	var out []Bar
	for _, e := range evs {
		if e.Stage != "Updating instance" {
			continue
		}
		at := e.Time.Sub(t0).Seconds()
		i, ok := idx[e.Step]
		if !ok {
			idx[e.Step] = len(out)
			i = len(out)
			out = append(out, Bar{Name: e.Step, Canary: slices.Contains(e.Tags, "canary"), State: "started", Start: at})
		}
		b := &out[i]
		switch e.State {
		case "info":
			var d struct {
				Text string `json:"text"`
				Note string `json:"note"`
			}
			json.Unmarshal(e.Data, &d)
			if n := d.Note + d.Text; n != "" {
				b.Notes = append(b.Notes, n)
			}
		case "finished", "failed":
			b.State, b.Length = e.State, at-b.Start
		}
	}
	if end <= 0 {
		end = 1
	}
	// A batch begins when every instance of the one before it is done.
	batch, batchEnd := 0, -1.0
	for i := range out {
		b := &out[i]
		if b.State == "started" {
			b.Length = end - b.Start
		}
		if b.Start >= batchEnd {
			batch++
		}
		b.Batch = batch
		batchEnd = max(batchEnd, b.Start+b.Length)
		b.LeftPct = 100 * b.Start / end
		b.WidPc = max(0.5, 100*b.Length/end)
	}
	return out, end
}

// ReleasesPage lists releases and stemcells with the deployments using them.
type ReleasesPage struct {
	Releases  []Used
	Stemcells []Used
}

// Used is a release or stemcell and who uses it.
type Used struct {
	Name, Version, Detail string
	UploadedAt            time.Time
	UsedBy                []string
}

func (h *Handler) releases(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	var rels []store.Release
	var stems []store.Stemcell
	var deps []store.Deployment
	for path, out := range map[string]any{"/v1/releases": &rels, "/v1/stemcells": &stems, "/v1/deployments": &deps} {
		if err := h.call(ctx, s, http.MethodGet, path, out); err != nil {
			return "", nil, err
		}
	}
	users := func(list func(store.Deployment) []string, nv string) []string {
		var out []string
		for _, d := range deps {
			if slices.Contains(list(d), nv) {
				out = append(out, d.Name)
			}
		}
		return out
	}
	var p ReleasesPage
	for _, r := range rels {
		p.Releases = append(p.Releases, Used{Name: r.Name, Version: r.Version, Detail: fmt.Sprintf("%d jobs, %d packages", len(r.Jobs), len(r.Packages)),
			UploadedAt: r.UploadedAt, UsedBy: users(func(d store.Deployment) []string { return d.Releases }, r.Name+"/"+r.Version)})
	}
	for _, st := range stems {
		var cpis []string
		for c := range st.CIDs {
			cpis = append(cpis, c)
		}
		sort.Strings(cpis)
		p.Stemcells = append(p.Stemcells, Used{Name: st.Name, Version: st.Version, Detail: st.OS + " on " + strings.Join(cpis, ", "),
			UploadedAt: st.UploadedAt, UsedBy: users(func(d store.Deployment) []string { return d.Stemcells }, st.Name+"/"+st.Version)})
	}
	return "releases", p, nil
}

// EventsPage is the audit log, alerts included.
type EventsPage struct {
	Events     []store.AuditEvent
	Deployment string
	Action     string
}

func (h *Handler) events(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	q := r.URL.Query()
	p := EventsPage{Deployment: q.Get("deployment"), Action: q.Get("action")}
	v := url.Values{"limit": {"200"}}
	if p.Deployment != "" {
		v.Set("deployment", p.Deployment)
	}
	if p.Action != "" {
		v.Set("action", p.Action)
	}
	if err := h.call(ctx, s, http.MethodGet, "/v1/events?"+v.Encode(), &p.Events); err != nil {
		return "", nil, err
	}
	return "events", p, nil
}

// CPIRow is one CPI method's call figures from the director's metrics.
type CPIRow struct {
	CPI, Method     string
	Calls, Failures uint64
	Mean            float64 // seconds
	P95             string  // the histogram bucket bound holding the 95th percentile
}

// CPIsPage lists the configured CPIs and their call latencies.
type CPIsPage struct {
	Names []string
	Calls []CPIRow
	Note  string
}

func (h *Handler) cpis(r *http.Request) (string, any, error) {
	s, ctx := sess(r), r.Context()
	var info struct {
		CPIs []string `json:"cpis"`
	}
	if err := h.call(ctx, s, http.MethodGet, "/v1/info", &info); err != nil {
		return "", nil, err
	}
	p := CPIsPage{Names: info.CPIs}
	text, err := h.text(ctx, s, "/metrics")
	if err != nil {
		p.Note = err.Error()
		return "cpis", p, nil
	}
	p.Calls = cpiCalls(text)
	return "cpis", p, nil
}

// cpiCalls reads compleat_cpi_call_duration_seconds from the Prometheus
// text exposition: per CPI and method, calls, failures, mean and the
// bucket of the 95th percentile.
func cpiCalls(text string) []CPIRow {
	type key struct{ cpi, method string }
	type acc struct {
		sum           float64
		count, failed uint64
		buckets       map[float64]uint64
	}
	m := map[key]*acc{}
	const base = "compleat_cpi_call_duration_seconds"
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, base) {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labelText, val, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(labelText, ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		k := key{labels["cpi"], labels["method"]}
		a := m[k]
		if a == nil {
			a = &acc{buckets: map[float64]uint64{}}
			m[k] = a
		}
		switch name {
		case base + "_sum":
			a.sum += f
		case base + "_count":
			a.count += uint64(f)
			if labels["outcome"] != "ok" {
				a.failed += uint64(f)
			}
		case base + "_bucket":
			le, err := strconv.ParseFloat(labels["le"], 64)
			if err == nil || labels["le"] == "+Inf" {
				if labels["le"] == "+Inf" {
					le = 1e308
				}
				a.buckets[le] += uint64(f)
			}
		}
	}
	var out []CPIRow
	for k, a := range m {
		if a.count == 0 {
			continue
		}
		row := CPIRow{CPI: k.cpi, Method: k.method, Calls: a.count, Failures: a.failed, Mean: a.sum / float64(a.count)}
		var les []float64
		for le := range a.buckets {
			les = append(les, le)
		}
		sort.Float64s(les)
		for _, le := range les {
			if float64(a.buckets[le]) >= 0.95*float64(a.count) {
				if le >= 1e308 {
					row.P95 = "> largest bucket"
				} else {
					row.P95 = "≤ " + strconv.FormatFloat(le*1000, 'f', -1, 64) + " ms"
				}
				break
			}
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CPI != out[j].CPI {
			return out[i].CPI < out[j].CPI
		}
		return out[i].Method < out[j].Method
	})
	return out
}
