package release

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/compleat/compleat/agent/supervisor"
)

// MonitFile is the name of a BOSH job's monit file, beside job.MF in a job
// tarball and beside spec in a job's source directory.
const MonitFile = "monit"

// Runner says how the agent runs a job's processes.
type Runner string

// The ways a job's processes run; see docs/bosh-compat.md.
const (
	// RunsProcessFile: the job renders config/processes.yml.
	RunsProcessFile Runner = "processes"
	// RunsBPM: the job renders config/bpm.yml (with or without a monit file
	// that starts bpm, BOSH's usual idiom).
	RunsBPM Runner = "bpm"
	// RunsMonit: the job's monit file declares its processes (check process
	// … start program … stop program).
	RunsMonit Runner = "monit"
	// RunsNothing: no process file, no bpm.yml and no (or an empty) monit
	// file: a job of configuration and lifecycle scripts, or an errand.
	RunsNothing Runner = "none"
)

// Paths, relative to the rendered job, that the agent reads.
const (
	ProcessFilePath = "config/processes.yml"
	BPMFilePath     = "config/bpm.yml"
)

// Runner classifies the job. A monit file without ERB tags is parsed here,
// so a syntax the agent cannot run is refused at upload naming the file and
// line; one with ERB tags is parsed once rendered, when the deploy is
// planned.
//
// The monit file is checked even when bpm.yml or processes.yml is what the
// agent runs: a statement it would not carry out (a resource test around a
// bpm process) is refused rather than dropped.
func (j *Job) Runner() (Runner, error) {
	dests := map[string]bool{}
	for _, d := range j.Spec.Templates {
		dests[d] = true
	}
	monit := MonitDeclaresProcesses(j.Monit)
	if monit && !bytes.Contains(j.Monit, []byte("<%")) {
		if _, err := supervisor.ParseMonit(j.Spec.Name, MonitFile, j.Monit); err != nil {
			return "", fmt.Errorf("job %s cannot be run: %w", j.Spec.Name, err)
		}
	}
	switch {
	case dests[ProcessFilePath]:
		return RunsProcessFile, nil
	case dests[BPMFilePath]:
		return RunsBPM, nil
	case monit:
		return RunsMonit, nil
	}
	return RunsNothing, nil
}

// MonitDeclaresProcesses reports whether a monit file has anything but
// blank lines, comments and ERB tags: BOSH errands ship an empty one.
func MonitDeclaresProcesses(monit []byte) bool {
	text := string(monit)
	for {
		start := strings.Index(text, "<%")
		if start < 0 {
			break
		}
		end := strings.Index(text[start:], "%>")
		if end < 0 {
			text = text[:start]
			break
		}
		text = text[:start] + text[start+end+2:]
	}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return true
		}
	}
	return false
}
