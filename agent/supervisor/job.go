package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadJob reads the processes of the rendered job in dir, the way the job
// declares them, in this order: config/processes.yml; config/bpm.yml (with
// or without a monit file that starts bpm); a monit file. A job with none
// of them, or an empty monit file (a BOSH errand's), runs no processes. A
// monit file the supervisor cannot run is an error, never "no processes".
// base is the VM's base directory (/var/vcap).
func LoadJob(base, job, dir string) ([]Process, error) {
	pf, err := LoadProcessFile(filepath.Join(dir, "config", "processes.yml"))
	if err == nil {
		return pf.Processes, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	bpmFile := filepath.Join(dir, "config", "bpm.yml")
	if data, err := os.ReadFile(bpmFile); err == nil {
		return ParseBPM(job, base, bpmFile, data)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	monitFile := filepath.Join(dir, "monit")
	data, err := os.ReadFile(monitFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if bytes.Contains(data, []byte("<%")) {
		return nil, fmt.Errorf("%s still holds ERB tags: it was not rendered", monitFile)
	}
	procs, err := ParseMonit(job, monitFile, data)
	if err != nil {
		return nil, err
	}
	for _, p := range procs {
		if f := strings.Fields(p.Monit.Start); len(f) > 0 && strings.HasSuffix(f[0], "/bpm") {
			return nil, fmt.Errorf("%s: process %s is started by bpm but the job has no config/bpm.yml", monitFile, p.Name)
		}
	}
	return procs, nil
}
