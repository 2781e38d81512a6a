package action

import (
	"context"
	"fmt"
	"os"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/tarball"
)

// fetchLogs uploads a tar.gz of sys/log (or of the named jobs' log
// directories) to a signed URL.
func (a *Actions) fetchLogs(ctx context.Context, req protocol.FetchLogsRequest) (protocol.FetchLogsResult, error) {
	if req.Upload.URL == "" {
		return protocol.FetchLogsResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "fetch_logs: upload url is empty"}
	}
	var include func(string) bool
	if len(req.Jobs) > 0 {
		want := map[string]bool{}
		for _, j := range req.Jobs {
			if !applyspec.ValidName(j) {
				return protocol.FetchLogsResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf("fetch_logs: job %q", j)}
			}
			want[j] = true
		}
		include = func(name string) bool { return want[name] }
	}
	f, err := os.CreateTemp(a.d.Layout.Data(), ".logs-*.tgz")
	if err != nil {
		return protocol.FetchLogsResult{}, fmt.Errorf("fetch_logs: %w", err)
	}
	defer os.Remove(f.Name())
	err = tarball.Create(f, a.d.Layout.SysLog(), include)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return protocol.FetchLogsResult{}, fmt.Errorf("fetch_logs: %w", err)
	}
	sum, size, err := a.d.Uploader.Upload(ctx, req.Upload, f.Name())
	if err != nil {
		return protocol.FetchLogsResult{}, fmt.Errorf("fetch_logs: %w", err)
	}
	return protocol.FetchLogsResult{SHA256: sum, Size: size}, nil
}
