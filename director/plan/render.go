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

// checkRunnable parses the rendered process declaration the agent will
// read (see supervisor.LoadJob).
func checkRunnable(job string, r template.Rendered) error {
	files := map[string][]byte{}
	for _, f := range r.Files {
		files[f.Path] = f.Content
	}
	var err error
	switch {
	case files[release.ProcessFilePath] != nil:
		_, err = supervisor.ParseProcessFile(release.ProcessFilePath, files[release.ProcessFilePath])
	case files[release.BPMFilePath] != nil:
		_, err = supervisor.ParseBPM(job, "/var/vcap", release.BPMFilePath, files[release.BPMFilePath])
	case release.MonitDeclaresProcesses(files[release.MonitFile]):
		_, err = supervisor.ParseMonit(job, release.MonitFile, files[release.MonitFile])
	}
	if err != nil {
		return fmt.Errorf("job %s cannot be run: %w", job, err)
	}
	return nil
}
