package action

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
)

// tailLogs answers what was appended to the jobs' log files since the
// positions given (director logs --follow polls it). Reads are bounded by
// MaxBytes per answer and cut after the last whole line where there is one.
// Only regular files named *.log directly in sys/log/<job>/ are read;
// symbolic links are not followed.
func (a *Actions) tailLogs(_ context.Context, req protocol.TailLogsRequest) (protocol.TailLogsResult, error) {
	for _, j := range req.Jobs {
		if !applyspec.ValidName(j) {
			return protocol.TailLogsResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf("tail_logs: job %q", j)}
		}
	}
	if req.Lines < 0 {
		return protocol.TailLogsResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "tail_logs: lines is negative"}
	}
	budget := req.MaxBytes
	if budget <= 0 || budget > protocol.TailLogsMaxBytes {
		budget = protocol.TailLogsMaxBytes
	}
	files, err := logFiles(a.d.Layout.SysLog(), req.Jobs)
	if err != nil {
		return protocol.TailLogsResult{}, fmt.Errorf("tail_logs: %w", err)
	}
	out := protocol.TailLogsResult{Positions: map[string]protocol.LogPosition{}}
	for _, name := range files {
		pos, data, err := readFrom(filepath.Join(a.d.Layout.SysLog(), filepath.FromSlash(name)), req, name, budget)
		if errors.Is(err, os.ErrNotExist) {
			continue // rotated away between the listing and the read
		}
		if err != nil {
			return protocol.TailLogsResult{}, fmt.Errorf("tail_logs %s: %w", name, err)
		}
		out.Positions[name] = pos
		if len(data) > 0 {
			out.Chunks = append(out.Chunks, protocol.LogChunk{File: name, Data: data})
			budget -= len(data)
		}
	}
	return out, nil
}

// logFiles lists "<job>/<file>.log" under root for the jobs (every job
// when empty), sorted.
func logFiles(root string, jobs []string) ([]string, error) {
	if len(jobs) == 0 {
		es, err := os.ReadDir(root)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if e.IsDir() {
				jobs = append(jobs, e.Name())
			}
		}
	}
	var out []string
	for _, j := range jobs {
		es, err := os.ReadDir(filepath.Join(root, j))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".log") {
				out = append(out, j+"/"+e.Name())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// readFrom reads one file from where the request says to start, at most
// budget bytes, and returns the position after what it returns.
func readFrom(path string, req protocol.TailLogsRequest, name string, budget int) (protocol.LogPosition, []byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return protocol.LogPosition{}, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return protocol.LogPosition{}, nil, err
	}
	var inode uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		inode = st.Ino
	}
	size := fi.Size()
	var start int64
	prev, known := req.Positions[name]
	switch {
	case req.Initial:
		if start, err = lastLines(f, size, req.Lines); err != nil {
			return protocol.LogPosition{}, nil, err
		}
	case known && prev.Inode == inode && prev.Offset <= size:
		start = prev.Offset
	default:
		start = 0 // new, rotated or truncated: all of it is new
	}
	pos := protocol.LogPosition{Offset: start, Inode: inode}
	n := min(size-start, int64(budget))
	if n <= 0 {
		return pos, nil, nil
	}
	data := make([]byte, n)
	if _, err := f.ReadAt(data, start); err != nil && !errors.Is(err, io.EOF) {
		return pos, nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1] // the end of a line still being written waits
	}
	pos.Offset += int64(len(data))
	return pos, data, nil
}

// lastLines returns the offset where the last n lines of f begin (a
// trailing line without its newline counts as one), reading backwards in
// blocks; it looks at most TailLogsMaxBytes back.
func lastLines(f *os.File, size int64, n int) (int64, error) {
	if n == 0 || size == 0 {
		return size, nil
	}
	const block = 8 << 10
	floor := max(0, size-protocol.TailLogsMaxBytes)
	end := size
	buf := make([]byte, block)
	newlines := 0
	// A final newline ends the last line; it does not start a new one.
	skipLast := true
	for end > floor {
		begin := max(floor, end-block)
		chunk := buf[:end-begin]
		if _, err := f.ReadAt(chunk, begin); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != '\n' {
				skipLast = false
				continue
			}
			if skipLast {
				skipLast = false
				continue
			}
			newlines++
			if newlines == n {
				return begin + int64(i) + 1, nil
			}
		}
		end = begin
	}
	return floor, nil
}
