package plan

import (
	"fmt"

	"github.com/compleat/compleat/agent/supervisor"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
)

// renderJob renders one job for one instance, with Go templates or, for a
// BOSH job, ERB, and checks that the agent can run what was rendered: a
// process file, bpm.yml or monit file the agent would refuse fails the
// plan, before any VM is touched.
func (c *computer) renderJob(tj template.Job, in template.Input) (template.Rendered, error) {
	var r template.Rendered
	var err error
	if template.IsERB(tj) {
		if c.d.ERB == nil {
			return template.Rendered{}, &template.Error{Job: tj.Name, Template: "(erb)", Err: template.ErrNoRuby}
		}
		r, err = c.d.ERB.Render(tj, in)
	} else {
		r, err = template.Render(tj, in)
	}
	if err != nil {
		return r, err
	}
	return r, checkRunnable(tj.Name, r)
}

// processNames lists the processes a rendered job runs, with the names
// the agent gives them (see supervisor.LoadJob), and the `depends on`
// names of its monit processes.
func processNames(job string, r template.Rendered) (names, after []string) {
	files := map[string][]byte{}
	for _, f := range r.Files {
		files[f.Path] = f.Content
	}
	var procs []supervisor.Process
	switch {
	case files[release.ProcessFilePath] != nil:
		pf, _ := supervisor.ParseProcessFile(release.ProcessFilePath, files[release.ProcessFilePath])
		procs = pf.Processes
	case files[release.BPMFilePath] != nil:
		procs, _ = supervisor.ParseBPM(job, "/var/vcap", release.BPMFilePath, files[release.BPMFilePath])
	case release.MonitDeclaresProcesses(files[release.MonitFile]):
		procs, _ = supervisor.ParseMonit(job, release.MonitFile, files[release.MonitFile])
	}
	for _, p := range procs {
		names = append(names, p.Name)
		after = append(after, p.After...)
	}
	return names, after
}

// checkDependsOn fails the plan when a monit process depends on a process
// that no job of its instance runs: the agent would wait for it forever.
func (c *computer) checkDependsOn() {
	for gi := range c.plan.Groups {
		g := &c.plan.Groups[gi]
		if len(g.Instances) == 0 {
			continue
		}
		in := &g.Instances[0]
		have := map[string]bool{}
		type want struct {
			job   string
			after []string
		}
		var wants []want
		for _, j := range in.Jobs {
			names, after := processNames(j.Name, j.Rendered)
			for _, n := range names {
				have[n] = true
			}
			wants = append(wants, want{j.Name, after})
		}
		for _, w := range wants {
			for _, a := range w.after {
				if !have[a] {
					c.errorf(fmt.Sprintf("%s.jobs", groupPath(c.groupIndex(g.Name))), "job %s: its monit file depends on process %q, which no job of instance group %s runs", w.job, a, g.Name)
				}
			}
		}
	}
}

// checkRunnable parses the rendered process declaration the agent will
// read (see supervisor.LoadJob).
func checkRunnable(job string, r template.Rendered) error {
	files := map[string][]byte{}
	for _, f := range r.Files {
		files[f.Path] = f.Content
	}
	var err error
	if release.MonitDeclaresProcesses(files[release.MonitFile]) {
		// Checked also when bpm.yml is what runs: nothing of it is dropped.
		_, err = supervisor.ParseMonit(job, release.MonitFile, files[release.MonitFile])
	}
	switch {
	case err != nil:
	case files[release.ProcessFilePath] != nil:
		_, err = supervisor.ParseProcessFile(release.ProcessFilePath, files[release.ProcessFilePath])
	case files[release.BPMFilePath] != nil:
		_, err = supervisor.ParseBPM(job, "/var/vcap", release.BPMFilePath, files[release.BPMFilePath])
	}
	if err != nil {
		return fmt.Errorf("job %s cannot be run: %w", job, err)
	}
	return nil
}
