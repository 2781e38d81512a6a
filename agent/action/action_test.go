package action_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/action"
	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/compile"
	"github.com/compleat/compleat/agent/disk"
	"github.com/compleat/compleat/agent/install"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/agent/supervisor"
	"github.com/compleat/compleat/agent/vitals"
	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/tarball"
)

// blobstore is a stateful fake of the director's blobstore: blobs by
// sha256, uploads by URL.
type blobstore struct {
	dir     string
	mu      sync.Mutex
	uploads map[string][]byte
}

func (b *blobstore) Fetch(_ context.Context, bl applyspec.Blob) (string, error) {
	p := filepath.Join(b.dir, bl.SHA256)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

func (b *blobstore) Upload(_ context.Context, u protocol.Upload, path string) (string, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	b.mu.Lock()
	b.uploads[u.URL] = data
	b.mu.Unlock()
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]), int64(len(data)), nil
}

func (b *blobstore) add(t *testing.T, files map[string]string) applyspec.Blob {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o755)
	}
	var buf bytes.Buffer
	if err := tarball.Create(&buf, src, nil); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	sum := hex.EncodeToString(s[:])
	os.WriteFile(filepath.Join(b.dir, sum), buf.Bytes(), 0o600)
	return applyspec.Blob{URL: "https://blobs.invalid/" + sum, SHA256: sum}
}

type env struct {
	a      *action.Actions
	l      layout.Layout
	blobs  *blobstore
	holder *settings.Holder
	events string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	l := layout.Layout{Base: t.TempDir()}
	if err := l.Ensure(); err != nil {
		t.Fatal(err)
	}
	bs := &blobstore{dir: t.TempDir(), uploads: map[string][]byte{}}
	inst := &install.Installer{Layout: l, Blobs: bs}
	sup, err := supervisor.New(nil, supervisor.Config{LogDir: l.SysLog(), MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sup.Close(ctx)
	})
	scripts, err := lifecycle.New(nil, lifecycle.Config{JobsDir: l.Jobs(), LogDir: l.SysLog()})
	if err != nil {
		t.Fatal(err)
	}
	dm := disk.New(l, nil)
	dm.Root = false
	holder := settings.NewHolder(settings.Settings{AgentID: "agent-1", VM: settings.VM{CID: "vm-1"}}, settings.Store{Dir: l.Bosh()})
	a := action.New(action.Deps{
		Layout:    l,
		Processes: sup,
		Scripts:   scripts,
		Installer: inst,
		Disks:     dm,
		Compiler:  &compile.Compiler{Layout: l, Blobs: bs, Packages: inst, Environ: os.Environ()},
		Uploader:  bs,
		Vitals:    &vitals.Sampler{},
		Settings:  holder,
	})
	t.Cleanup(a.Close)
	return &env{a: a, l: l, blobs: bs, holder: holder, events: filepath.Join(t.TempDir(), "events")}
}

// call sends one request and decodes the reply; for long methods it polls
// get_task until the task ends.
func (e *env) call(t *testing.T, method string, arg any, out any) error {
	t.Helper()
	req, err := protocol.NewRequest(method, arg)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(req)
	resp := e.decode(t, e.a.Handle(context.Background(), data))
	if resp.Exception != nil {
		return resp.Exception
	}
	if !protocol.Long(method) {
		if out != nil {
			json.Unmarshal(resp.Value, out)
		}
		return nil
	}
	var st protocol.TaskStatus
	json.Unmarshal(resp.Value, &st)
	deadline := time.Now().Add(30 * time.Second)
	for st.State == protocol.TaskRunning {
		if time.Now().After(deadline) {
			t.Fatalf("%s task still running", method)
		}
		time.Sleep(10 * time.Millisecond)
		if err := e.call(t, protocol.MethodGetTask, protocol.TaskRequest{AgentTaskID: st.AgentTaskID}, &st); err != nil {
			return err
		}
	}
	if out != nil {
		json.Unmarshal(st.Result, out)
	}
	return nil
}

func (e *env) start(t *testing.T, method string, arg any) string {
	t.Helper()
	req, _ := protocol.NewRequest(method, arg)
	data, _ := json.Marshal(req)
	resp := e.decode(t, e.a.Handle(context.Background(), data))
	if resp.Exception != nil {
		t.Fatal(resp.Exception)
	}
	var st protocol.TaskStatus
	json.Unmarshal(resp.Value, &st)
	return st.AgentTaskID
}

func (e *env) decode(t *testing.T, b []byte) protocol.Response {
	t.Helper()
	var r protocol.Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("reply %s: %v", b, err)
	}
	if (r.Exception == nil) == (r.Value == nil) {
		t.Fatalf("reply %s: want exactly one of value and exception", b)
	}
	return r
}

func (e *env) job(t *testing.T, name string, files map[string]string) applyspec.Job {
	return applyspec.Job{Name: name, Blob: e.blobs.add(t, files)}
}

func TestEnvelopeErrors(t *testing.T) {
	e := newEnv(t)
	for name, tc := range map[string]struct {
		req  string
		code string
	}{
		"unknown method": {`{"method":"format_everything","arguments":[]}`, protocol.CodeUnknownMethod},
		"not json":       {`{"method":`, protocol.CodeBadArguments},
		"bad argument":   {`{"method":"get_task","arguments":[{"agent_task_id": 7}]}`, protocol.CodeBadArguments},
		"unknown field":  {`{"method":"get_task","arguments":[{"task": "x"}]}`, protocol.CodeBadArguments},
		"too many":       {`{"method":"apply","arguments":[{},{}]}`, protocol.CodeBadArguments},
		"no task":        {`{"method":"get_task","arguments":[{"agent_task_id": "nope"}]}`, protocol.CodeTaskNotFound},
		"args to ping":   {`{"method":"ping","arguments":[1]}`, protocol.CodeBadArguments},
	} {
		r := e.decode(t, e.a.Handle(context.Background(), []byte(tc.req)))
		if r.Exception == nil || r.Exception.Code != tc.code {
			t.Errorf("%s: reply %+v, want exception %s", name, r, tc.code)
		}
	}
	var pong string
	if err := e.call(t, protocol.MethodPing, nil, &pong); err != nil || pong != "pong" {
		t.Fatalf("ping: %q %v", pong, err)
	}
}

func TestApplyStartStateAndStop(t *testing.T) {
	e := newEnv(t)
	web := e.job(t, "web", map[string]string{
		"config/processes.yml": "processes:\n- name: sleeper\n  executable: sleep\n  args: [\"600\"]\n",
		"bin/post-stop":        "#!/bin/sh\necho post-stop >> " + e.events + "\n",
		"bin/pre-stop":         "#!/bin/sh\necho pre-stop vm=$BOSH_VM_NEXT_STATE instance=$BOSH_INSTANCE_NEXT_STATE >> " + e.events + "\n",
	})
	cron := e.job(t, "cron", map[string]string{"bin/pre-start": "#!/bin/sh\nexit 0\n"})
	spec := applyspec.Spec{Deployment: "d", Name: "g", ID: "i", Jobs: []applyspec.Job{web, cron}}
	if err := e.call(t, protocol.MethodApply, spec, nil); err != nil {
		t.Fatal(err)
	}
	var st protocol.State
	e.call(t, protocol.MethodGetState, nil, &st)
	if st.JobState != protocol.StateStopped || st.Spec == nil || st.AgentID != "agent-1" {
		t.Fatalf("state after apply %+v", st)
	}
	if err := e.call(t, protocol.MethodStart, nil, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.JobState != protocol.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("state %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
		e.call(t, protocol.MethodGetState, nil, &st)
	}
	if len(st.Jobs) != 2 || st.Jobs[1].Name != "web" && st.Jobs[0].Name != "web" {
		t.Fatalf("jobs %+v", st.Jobs)
	}
	if st.Vitals.Mem.KB == 0 {
		t.Fatal("no vitals")
	}

	stop := protocol.StopRequest{Drain: &protocol.DrainRequest{Type: protocol.DrainShutdown}, Next: protocol.NextState{VM: "delete"}}
	if err := e.call(t, protocol.MethodStop, stop, nil); err != nil {
		t.Fatal(err)
	}
	e.call(t, protocol.MethodGetState, nil, &st)
	if st.JobState != protocol.StateStopped {
		t.Fatalf("after stop %+v", st.JobState)
	}
	if b, _ := os.ReadFile(e.events); string(b) != "pre-stop vm=delete instance=keep\npost-stop\n" {
		t.Fatalf("pre-stop and post-stop: %q", b)
	}

	// Applying a spec without web forgets its processes.
	if err := e.call(t, protocol.MethodApply, applyspec.Spec{Jobs: []applyspec.Job{cron}}, nil); err != nil {
		t.Fatal(err)
	}
	e.call(t, protocol.MethodGetState, nil, &st)
	if len(st.Jobs) != 1 || st.Jobs[0].Name != "cron" {
		t.Fatalf("jobs after second apply %+v", st.Jobs)
	}
}

func drainScript(events, answer string) string {
	return "#!/bin/sh\necho \"$(basename $(dirname $(dirname $0))) $* next=$BOSH_JOB_NEXT_STATE\" >> " + events + "\n" + answer
}

func TestDrainArguments(t *testing.T) {
	e := newEnv(t)
	changed := e.job(t, "changed", map[string]string{"bin/drain": drainScript(e.events, "echo 0")})
	same := e.job(t, "same", map[string]string{"bin/drain": drainScript(e.events, "echo 0")})
	leaving := e.job(t, "leaving", map[string]string{"bin/drain": drainScript(e.events, "echo 0")})
	pkg1 := applyspec.Package{Name: "lib", Version: "1", Blob: e.blobs.add(t, map[string]string{"a": "1"})}
	pkg2 := applyspec.Package{Name: "lib", Version: "2", Blob: e.blobs.add(t, map[string]string{"a": "2"})}
	cur := applyspec.Spec{Jobs: []applyspec.Job{changed, same, leaving}, Packages: []applyspec.Package{pkg1}}
	if err := e.call(t, protocol.MethodApply, cur, nil); err != nil {
		t.Fatal(err)
	}
	changed2 := changed
	changed2.Blob = e.blobs.add(t, map[string]string{"bin/drain": "#!/bin/sh\necho 0\n", "new": "x"})
	next := applyspec.Spec{Jobs: []applyspec.Job{changed2, same}, Packages: []applyspec.Package{pkg2}, PersistentDisk: &applyspec.Disk{SizeMB: 1024}}
	if err := e.call(t, protocol.MethodDrain, protocol.DrainRequest{Type: protocol.DrainUpdate, NextSpec: &next}, nil); err != nil {
		t.Fatal(err)
	}
	got := lines(t, e.events)
	want := []string{
		`changed job_changed hash_changed lib next={"persistent_disk":1024}`,
		`leaving job_shutdown hash_changed lib next={"persistent_disk":1024}`,
		`same job_unchanged hash_changed lib next={"persistent_disk":1024}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("drain calls\n got %q\nwant %q", got, want)
	}

	os.Remove(e.events)
	if err := e.call(t, protocol.MethodDrain, protocol.DrainRequest{Type: protocol.DrainShutdown}, nil); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines(t, e.events) {
		if !strings.Contains(l, " job_shutdown hash_unchanged") {
			t.Fatalf("shutdown drain call %q", l)
		}
	}
	if err := e.call(t, protocol.MethodDrain, protocol.DrainRequest{Type: "later"}, nil); !errors.Is(err, protocol.ErrBadArguments) {
		t.Fatalf("bad drain type: %v", err)
	}
}

func TestDynamicDrainAndCancel(t *testing.T) {
	e := newEnv(t)
	counter := filepath.Join(t.TempDir(), "count")
	dynamic := "#!/bin/sh\necho \"$*\" >> " + e.events + "\nif [ -e " + counter + " ]; then echo 0; else touch " + counter + "; echo -1; fi\n"
	job := e.job(t, "db", map[string]string{"bin/drain": dynamic})
	if err := e.call(t, protocol.MethodApply, applyspec.Spec{Jobs: []applyspec.Job{job}}, nil); err != nil {
		t.Fatal(err)
	}
	var res protocol.DrainResult
	if err := e.call(t, protocol.MethodDrain, protocol.DrainRequest{Type: protocol.DrainShutdown}, &res); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(e.events); string(got) != "job_shutdown hash_unchanged\njob_check_status hash_unchanged\n" {
		t.Fatalf("dynamic drain calls %q", got)
	}
	if time.Duration(res.Waited) < time.Second {
		t.Fatalf("waited %v, want the 1s the script asked for", time.Duration(res.Waited))
	}

	// A drain asking for a long wait is cancelled by cancel_task.
	slow := e.job(t, "db", map[string]string{"bin/drain": "#!/bin/sh\necho 600\n"})
	if err := e.call(t, protocol.MethodApply, applyspec.Spec{Jobs: []applyspec.Job{slow}}, nil); err != nil {
		t.Fatal(err)
	}
	id := e.start(t, protocol.MethodDrain, protocol.DrainRequest{Type: protocol.DrainShutdown})
	time.Sleep(100 * time.Millisecond)
	if err := e.call(t, protocol.MethodCancelTask, protocol.TaskRequest{AgentTaskID: id}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := e.call(t, protocol.MethodGetTask, protocol.TaskRequest{AgentTaskID: id}, nil)
		if errors.Is(err, protocol.ErrCanceled) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task not cancelled: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunScript(t *testing.T) {
	e := newEnv(t)
	ok := e.job(t, "ok", map[string]string{"bin/post-deploy": "#!/bin/sh\nexit 0\n"})
	bad := e.job(t, "bad", map[string]string{"bin/post-deploy": "#!/bin/sh\necho broken >&2\nexit 4\n"})
	none := e.job(t, "none", map[string]string{"README": "x"})
	if err := e.call(t, protocol.MethodApply, applyspec.Spec{Jobs: []applyspec.Job{ok, bad, none}}, nil); err != nil {
		t.Fatal(err)
	}
	err := e.call(t, protocol.MethodRunScript, protocol.RunScriptRequest{Name: "post-deploy"}, nil)
	var exc *protocol.Exception
	if !errors.As(err, &exc) || !strings.Contains(exc.Log, "broken") {
		t.Fatalf("err = %#v, want the failing job's output", err)
	}
	if err := e.call(t, protocol.MethodRunScript, protocol.RunScriptRequest{Name: "../../bin/sh"}, nil); !errors.Is(err, protocol.ErrBadArguments) {
		t.Fatalf("bad script name: %v", err)
	}
	var res protocol.RunScriptResult
	if err := e.call(t, protocol.MethodRunScript, protocol.RunScriptRequest{Name: "pre-start"}, &res); err != nil || len(res.Jobs) != 0 {
		t.Fatalf("no job has pre-start: %+v %v", res, err)
	}
	preStop := e.job(t, "ok", map[string]string{"bin/pre-stop": "#!/bin/sh\necho $BOSH_VM_NEXT_STATE $BOSH_DEPLOYMENT_NEXT_STATE > " + e.events + "\n"})
	if err := e.call(t, protocol.MethodApply, applyspec.Spec{Jobs: []applyspec.Job{preStop}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.call(t, protocol.MethodRunScript, protocol.RunScriptRequest{Name: "pre-stop", Next: protocol.NextState{VM: "delete"}}, &res); err != nil || res.Jobs["ok"].ExitCode != 0 {
		t.Fatalf("pre-stop: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(e.events); string(b) != "delete keep\n" {
		t.Fatalf("pre-stop env %q", b)
	}
}

func TestFetchLogs(t *testing.T) {
	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.l.SysLog(), "web"), 0o755)
	os.WriteFile(filepath.Join(e.l.SysLog(), "web", "web.stdout.log"), []byte("listening\n"), 0o644)
	os.MkdirAll(filepath.Join(e.l.SysLog(), "db"), 0o755)
	os.WriteFile(filepath.Join(e.l.SysLog(), "db", "db.stdout.log"), []byte("ready\n"), 0o644)
	var res protocol.FetchLogsResult
	if err := e.call(t, protocol.MethodFetchLogs, protocol.FetchLogsRequest{Jobs: []string{"web"}, Upload: protocol.Upload{URL: "https://x/logs"}}, &res); err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, e.blobs.uploads["https://x/logs"])
	if !reflect.DeepEqual(names, []string{"web/", "web/web.stdout.log"}) {
		t.Fatalf("archive holds %v", names)
	}
	if res.Size != int64(len(e.blobs.uploads["https://x/logs"])) {
		t.Fatalf("result %+v", res)
	}
}

func TestDisksAndSettings(t *testing.T) {
	e := newEnv(t)
	d := t.TempDir()
	if err := e.call(t, protocol.MethodUpdateSettings, protocol.UpdateSettingsRequest{Disks: map[string]cpi.DiskHint{"disk-1": {Path: d}}}, nil); err != nil {
		t.Fatal(err)
	}
	if e.holder.Current().Disks.Persistent["disk-1"].Path != d {
		t.Fatal("update_settings not applied")
	}
	if err := e.call(t, protocol.MethodMountDisk, protocol.MountDiskRequest{DiskCID: "disk-1"}, nil); err != nil {
		t.Fatal(err)
	}
	var list protocol.ListDiskResult
	e.call(t, protocol.MethodListDisk, nil, &list)
	if !reflect.DeepEqual(list.Disks, []string{"disk-1"}) {
		t.Fatalf("list %v", list)
	}
	if err := e.call(t, protocol.MethodMountDisk, protocol.MountDiskRequest{DiskCID: "disk-9"}, nil); err == nil {
		t.Fatal("mounted a disk with no hint")
	}
	if err := e.call(t, protocol.MethodUnmountDisk, protocol.UnmountDiskRequest{DiskCID: "disk-1"}, nil); err != nil {
		t.Fatal(err)
	}
	e.call(t, protocol.MethodListDisk, nil, &list)
	if len(list.Disks) != 0 {
		t.Fatalf("list after unmount %v", list)
	}
}

func TestCompilePackageAction(t *testing.T) {
	e := newEnv(t)
	src := e.blobs.add(t, map[string]string{"packaging": "echo built > $BOSH_INSTALL_TARGET/out\n"})
	var res protocol.CompilePackageResult
	err := e.call(t, protocol.MethodCompilePackage, protocol.CompilePackageRequest{Name: "p", Version: "1", Source: src, Upload: protocol.Upload{URL: "https://x/p"}}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if names := tarNames(t, e.blobs.uploads["https://x/p"]); !reflect.DeepEqual(names, []string{"out"}) || len(res.SHA256) != 64 {
		t.Fatalf("compiled archive %v, result %+v", names, res)
	}
	broken := e.blobs.add(t, map[string]string{"packaging": "echo 'undefined: main' >&2\nexit 2\n"})
	err = e.call(t, protocol.MethodCompilePackage, protocol.CompilePackageRequest{Name: "p", Version: "2", Source: broken, Upload: protocol.Upload{URL: "https://x/p2"}}, nil)
	var exc *protocol.Exception
	if !errors.As(err, &exc) || exc.Code != protocol.CodeFailed || !strings.Contains(exc.Log, "undefined: main") {
		t.Fatalf("err = %#v, want a failure carrying the packaging log", err)
	}
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	sortStrings(ls)
	return ls
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func tarNames(t *testing.T, data []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	sortStrings(names)
	return names
}
