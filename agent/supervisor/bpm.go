package supervisor

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// bpm files. A BOSH job may describe its processes in config/bpm.yml, bpm's
// documented format:
//
//	processes:
//	- name: web                         # the first is usually the job's name
//	  executable: /var/vcap/packages/web/bin/web
//	  args: [--port, "8080"]
//	  env: {LOG_LEVEL: info}
//	  workdir: /var/vcap/jobs/web       # bpm's default
//	  limits: {open_files: 4096, memory: 1G, processes: 100}
//	  ephemeral_disk: true              # /var/vcap/data/<job>
//	  persistent_disk: true             # /var/vcap/store/<job>
//	  additional_volumes: [{path: /var/vcap/data/shared, writable: true}]
//	  hooks: {pre_start: /var/vcap/jobs/web/bin/bpm-pre-start}
//	  shutdown_signal: TERM
//
// ParseBPM turns it into Processes the supervisor runs directly, with bpm's
// log paths (<log>/<job>/<process>.stdout.log and .stderr.log), bpm's pid
// file (<base>/sys/run/bpm/<job>/<process>.pid) and bpm's environment
// (TMPDIR=<base>/data/<job>/tmp). The volumes become directories
// created before the process starts; without bpm's container the process
// sees the whole file system (see docs/bosh-compat.md). limits.memory and
// limits.processes are checked but not enforced (bpm uses cgroups).

// ParseBPM parses a job's config/bpm.yml. base is the VM's base directory
// (/var/vcap); file names the file in errors.
func ParseBPM(job, base, file string, data []byte) ([]Process, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &FieldError{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &FieldError{File: file, Field: "processes", Msg: "file is empty"}
	}
	root := doc.Content[0]
	f := p.mapping(root, "", []string{"processes"})
	list, ok := f["processes"]
	if !ok || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		p.fail(root, "processes", "must be a non-empty list")
		return nil, p.err()
	}
	var out []Process
	seen := map[string]bool{}
	for i, item := range list.Content {
		at := fmt.Sprintf("processes[%d]", i)
		proc := p.bpmProcess(item, at, job, base)
		if proc.Name != "" {
			if seen[proc.Name] {
				p.fail(item, at+".name", fmt.Sprintf("%q is used twice", proc.Name))
			}
			seen[proc.Name] = true
		}
		out = append(out, proc)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return out, nil
}

func (p *parser) bpmProcess(n *yaml.Node, at, job, base string) Process {
	f := p.mapping(n, at, []string{"name", "executable", "args", "env", "workdir", "limits",
		"ephemeral_disk", "persistent_disk", "additional_volumes", "hooks", "shutdown_signal",
		"capabilities", "unsafe"})
	proc := Process{Shutdown: Shutdown{Signal: DefaultShutdownSignal, Timeout: DefaultShutdownTimeout}}
	if v, ok := f["name"]; ok {
		if s, ok := p.str(v, at+".name"); ok {
			if !nameRE.MatchString(s) {
				p.fail(v, at+".name", fmt.Sprintf("%q: use 1-63 letters, digits, '.', '_', '-'", s))
			}
			proc.Name = s
		}
	} else {
		p.fail(n, at+".name", "is required")
	}
	if v, ok := f["executable"]; ok {
		if s, ok := p.str(v, at+".executable"); ok {
			if !path.IsAbs(s) {
				p.fail(v, at+".executable", fmt.Sprintf("%q must be an absolute path", s))
			}
			proc.Executable = s
		}
	} else {
		p.fail(n, at+".executable", "is required")
	}
	if v, ok := f["args"]; ok {
		proc.Args, _ = p.strList(v, at+".args")
	}
	proc.Env = map[string]string{}
	if v, ok := f["env"]; ok {
		proc.Env = p.env(v, at+".env")
	}
	data := path.Join(base, "data", job)
	if _, set := proc.Env["TMPDIR"]; !set {
		proc.Env["TMPDIR"] = path.Join(data, "tmp")
	}
	proc.Dirs = append(proc.Dirs, path.Join(data, "tmp"))
	proc.Workdir = path.Join(base, "jobs", job)
	if proc.Name != "" {
		proc.PidFile = path.Join(base, "sys", "run", "bpm", job, proc.Name+".pid")
	}
	if v, ok := f["workdir"]; ok {
		if s, ok := p.str(v, at+".workdir"); ok {
			if !path.IsAbs(s) {
				p.fail(v, at+".workdir", fmt.Sprintf("%q must be an absolute path", s))
			}
			proc.Workdir = s
		}
	}
	if v, ok := f["limits"]; ok {
		lf := p.mapping(v, at+".limits", []string{"open_files", "memory", "processes"})
		if x, ok := lf["open_files"]; ok {
			if s, ok := p.str(x, at+".limits.open_files"); ok {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil || n == 0 {
					p.fail(x, at+".limits.open_files", fmt.Sprintf("%q is not a positive number", s))
				}
				proc.Limits.OpenFiles = n
			}
		}
		if x, ok := lf["memory"]; ok {
			if s, ok := p.str(x, at+".limits.memory"); ok && !memoryRE(s) {
				p.fail(x, at+".limits.memory", fmt.Sprintf("%q is not a size (like 512M, 1G)", s))
			}
		}
		if x, ok := lf["processes"]; ok {
			if s, ok := p.str(x, at+".limits.processes"); ok {
				if _, err := strconv.ParseUint(s, 10, 64); err != nil {
					p.fail(x, at+".limits.processes", fmt.Sprintf("%q is not a number", s))
				}
			}
		}
	}
	for _, disk := range []struct{ key, dir string }{{"ephemeral_disk", data}, {"persistent_disk", path.Join(base, "store", job)}} {
		if v, ok := f[disk.key]; ok {
			if s, ok := p.str(v, at+"."+disk.key); ok {
				b, err := strconv.ParseBool(s)
				if err != nil {
					p.fail(v, at+"."+disk.key, "must be true or false")
				}
				if b {
					proc.Dirs = append(proc.Dirs, disk.dir)
				}
			}
		}
	}
	if v, ok := f["additional_volumes"]; ok {
		if v.Kind != yaml.SequenceNode {
			p.fail(v, at+".additional_volumes", "must be a list")
		} else {
			for i, vol := range v.Content {
				vat := fmt.Sprintf("%s.additional_volumes[%d]", at, i)
				vf := p.mapping(vol, vat, []string{"path", "writable", "allow_executions", "mount_only"})
				pv, ok := vf["path"]
				if !ok {
					p.fail(vol, vat+".path", "is required")
					continue
				}
				if s, ok := p.str(pv, vat+".path"); ok {
					if !path.IsAbs(s) || path.Clean(s) != s {
						p.fail(pv, vat+".path", fmt.Sprintf("%q must be a clean absolute path", s))
					} else if !strings.HasPrefix(s, path.Join(base, "data")+"/") && !strings.HasPrefix(s, path.Join(base, "store")+"/") && !strings.HasPrefix(s, path.Join(base, "sys", "run")+"/") {
						p.fail(pv, vat+".path", fmt.Sprintf("%q is outside %s/data, %s/store and %s/sys/run (bpm's own rule)", s, base, base, base))
					} else {
						proc.Dirs = append(proc.Dirs, s)
					}
				}
			}
		}
	}
	if v, ok := f["hooks"]; ok {
		hf := p.mapping(v, at+".hooks", []string{"pre_start"})
		if x, ok := hf["pre_start"]; ok {
			if s, ok := p.str(x, at+".hooks.pre_start"); ok {
				if !path.IsAbs(s) {
					p.fail(x, at+".hooks.pre_start", fmt.Sprintf("%q must be an absolute path", s))
				}
				proc.PreStart = s
			}
		}
	}
	if v, ok := f["shutdown_signal"]; ok {
		if s, ok := p.str(v, at+".shutdown_signal"); ok {
			sig, err := ParseSignal(s)
			if err != nil {
				p.fail(v, at+".shutdown_signal", err.Error())
			}
			proc.Shutdown.Signal = sig
		}
	}
	if v, ok := f["unsafe"]; ok {
		uf := p.mapping(v, at+".unsafe", []string{"privileged", "unrestricted_volumes"})
		for k, x := range uf {
			p.fail(x, at+".unsafe."+k, "is not supported: processes run as the agent's user, without a container")
		}
	}
	return proc
}

// memoryRE accepts bpm's memory sizes: digits with an optional K, M, G or
// T suffix (optionally followed by B).
func memoryRE(s string) bool {
	s = strings.TrimSuffix(strings.ToUpper(s), "B")
	s = strings.TrimRight(s, "KMGT")
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil && s != ""
}
