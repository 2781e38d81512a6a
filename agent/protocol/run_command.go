package protocol

import "time"

// Methods that reach into a VM for an operator: run_command (director ssh)
// and tail_logs (director logs --follow).
const (
	MethodRunCommand = "run_command"
	MethodTailLogs   = "tail_logs"
)

// Bounds of run_command and tail_logs.
const (
	// RunCommandDefaultTimeout is a command's time limit when the request
	// names none; RunCommandMaxTimeout is the most a request may ask.
	RunCommandDefaultTimeout = Duration(time.Minute)
	RunCommandMaxTimeout     = Duration(time.Hour)
	// RunCommandMaxOutput is the most of each stream (stdout, stderr) a
	// result carries, and the default.
	RunCommandMaxOutput = 1 << 20
	// TailLogsMaxBytes is the most one tail_logs answer carries, and the
	// default.
	TailLogsMaxBytes = 256 << 10
)

// RunCommandRequest is the argument of run_command: the agent runs
// `/bin/sh -c Command` in its base directory (/var/vcap), stdin empty, as the
// agent's user, and kills the command's process group when Timeout passes.
type RunCommandRequest struct {
	Command string `json:"command"`
	// Timeout bounds the run (0: RunCommandDefaultTimeout; at most
	// RunCommandMaxTimeout).
	Timeout Duration `json:"timeout,omitempty"`
	// MaxOutput bounds each stream kept (0 or more than RunCommandMaxOutput:
	// RunCommandMaxOutput bytes); the rest is counted and dropped.
	MaxOutput int `json:"max_output,omitempty"`
}

// RunCommandResult is how a command ended. The task succeeds whatever the
// exit code: a command that exits non-zero is a result, not an agent failure.
type RunCommandResult struct {
	// ExitCode is the command's exit status; 128+N when signal N ended it;
	// -1 when it timed out.
	ExitCode int  `json:"exit_code"`
	TimedOut bool `json:"timed_out,omitempty"`
	// Stdout and Stderr are the first MaxOutput bytes of each stream
	// (base64 in JSON, so any bytes survive).
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// StdoutBytes and StderrBytes are how much each stream wrote in all;
	// more than len(Stdout) means the output was cut.
	StdoutBytes int64    `json:"stdout_bytes"`
	StderrBytes int64    `json:"stderr_bytes"`
	Duration    Duration `json:"duration"`
}

// TailLogsRequest is the argument of tail_logs: the bytes appended to the
// log files under sys/log/<job>/ (every "*.log" file directly in a job's
// directory; rotated copies are not read) since the positions given.
//
// A follower calls it first with Initial set, then again and again with the
// Positions of the previous answer.
type TailLogsRequest struct {
	// Jobs limits the files to these jobs' directories; empty means every
	// job.
	Jobs []string `json:"jobs,omitempty"`
	// Initial marks the first call: each file is read from Lines lines
	// before its end. On later calls a file missing from Positions is new
	// and read from its start.
	Initial bool `json:"initial,omitempty"`
	Lines   int  `json:"lines,omitempty"`
	// Positions are where the previous answer stopped, by file.
	Positions map[string]LogPosition `json:"positions,omitempty"`
	// MaxBytes bounds the data of the answer (0 or more than
	// TailLogsMaxBytes: TailLogsMaxBytes); what does not fit comes with
	// the next call.
	MaxBytes int `json:"max_bytes,omitempty"`
}

// LogPosition is how far a log file has been read. A file whose inode
// changed (it was rotated) or that shrank (it was truncated) is read again
// from its start.
type LogPosition struct {
	Offset int64  `json:"offset"`
	Inode  uint64 `json:"inode"`
}

// TailLogsResult is the data read, in whole lines where possible (a line
// longer than the answer's bound comes in pieces), and every file's
// position for the next call.
type TailLogsResult struct {
	Chunks    []LogChunk             `json:"chunks,omitempty"`
	Positions map[string]LogPosition `json:"positions"`
}

// LogChunk is data read from one file, named by its path under sys/log
// ("web/webapp.stdout.log").
type LogChunk struct {
	File string `json:"file"`
	Data []byte `json:"data"`
}
