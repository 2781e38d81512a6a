// Package remote reaches into instances' VMs through their agents: job
// logs fetched into the blobstore (FetchLogs) and commands run there
// (Run). The API's logs and ssh routes and run-errand --download-logs use
// it; the routes add only transport, auth and audit.
package remote

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/store"
)

// Agent is one instance's agent as logs and commands use it.
type Agent interface {
	FetchLogs(ctx context.Context, req protocol.FetchLogsRequest) (protocol.FetchLogsResult, error)
	TailLogs(ctx context.Context, req protocol.TailLogsRequest) (protocol.TailLogsResult, error)
	RunCommand(ctx context.Context, req protocol.RunCommandRequest) (protocol.RunCommandResult, error)
}

var _ Agent = (*client.Client)(nil)

// ErrandLogsStage is apiv1.ErrandLogsStage.
const ErrandLogsStage = apiv1.ErrandLogsStage

// LogsBlobPrefix starts the ids of log archives in the blobstore.
const LogsBlobPrefix = "logs-"

const (
	logsBlobTTL = 30 * time.Minute
	// FetchLogsLimit bounds a fetch of logs: an agent that stops answering
	// is otherwise waited for until the task is cancelled.
	FetchLogsLimit = 10 * time.Minute
)

// LogsResult is apiv1.LogsResult.
type LogsResult = apiv1.LogsResult

// FetchLogs has an agent upload its instance's job logs (jobs: all when
// empty) into blobs through a URL signer signs for blobURL, checks the
// archive against what the agent reports, and returns its blob id; the
// archive is deleted when anything fails.
func FetchLogs(ctx context.Context, agent Agent, blobs blobstore.Store, signer *blobstore.Signer, blobURL string, jobs []string) (string, protocol.FetchLogsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchLogsLimit)
	defer cancel()
	blobID, err := newLogsBlobID()
	if err != nil {
		return "", protocol.FetchLogsResult{}, err
	}
	put, err := signer.URL(blobURL, http.MethodPut, blobID, logsBlobTTL, "")
	if err != nil {
		return "", protocol.FetchLogsResult{}, err
	}
	got, err := agent.FetchLogs(ctx, protocol.FetchLogsRequest{Jobs: jobs, Upload: protocol.Upload{URL: put}})
	if err == nil {
		err = checkBlob(ctx, blobs, blobID, got)
	}
	if err != nil {
		blobs.Delete(context.WithoutCancel(ctx), blobID)
		return "", got, fmt.Errorf("fetch logs: %w", err)
	}
	return blobID, got, nil
}

func newLogsBlobID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("logs blob id: %w", err)
	}
	return LogsBlobPrefix + hex.EncodeToString(b), nil
}

// checkBlob verifies that the stored archive is what the agent says it
// uploaded.
func checkBlob(ctx context.Context, blobs blobstore.Store, id string, want protocol.FetchLogsResult) error {
	rc, err := blobs.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("uploaded archive: %w", err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("read uploaded archive: %w", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != want.SHA256 || n != want.Size {
		return fmt.Errorf("uploaded archive is %d bytes sha256 %s, the agent sent %d bytes sha256 %s", n, sum, want.Size, want.SHA256)
	}
	return nil
}

// CommandResult is apiv1.CommandResult.
type CommandResult = apiv1.CommandResult

// Run runs command with `/bin/sh -c` on inst's VM through agent (nil when
// the instance has no VM); the agent kills it after timeout.
func Run(ctx context.Context, agent Agent, inst store.Instance, command string, timeout time.Duration) CommandResult {
	res := CommandResult{Instance: inst.Group + "/" + inst.ID, Index: inst.Index, ExitCode: -1}
	if inst.AgentID == "" || agent == nil {
		res.Error = "no vm"
		return res
	}
	// The agent kills the command at timeout; the margin covers the trip.
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	got, err := agent.RunCommand(ctx, protocol.RunCommandRequest{Command: command, Timeout: protocol.Duration(timeout)})
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.ExitCode, res.TimedOut = got.ExitCode, got.TimedOut
	res.Stdout, res.Stderr = string(got.Stdout), string(got.Stderr)
	res.StdoutBytes, res.StderrBytes = got.StdoutBytes, got.StderrBytes
	return res
}
