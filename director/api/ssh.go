package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/remote"
	"github.com/compleat/compleat/director/store"
)

// SSHRequest is apiv1.SSHRequest.
type SSHRequest = apiv1.SSHRequest

// SSHResult is apiv1.SSHResult.
type SSHResult = apiv1.SSHResult

// CommandResult is how the command went on one instance (remote.Run).
type CommandResult = remote.CommandResult

// ssh runs a command on instances for an operator. Each instance's run is an
// audit event naming the user, the instance, the command's sha256 and its
// exit code; the command's text and its output are never recorded or logged.
func (s *Server) ssh(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req SSHRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Command == "" {
		fail(w, fmt.Errorf("%w: command is empty", ErrBadInput))
		return
	}
	timeout := time.Duration(protocol.RunCommandDefaultTimeout)
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 || d > time.Duration(protocol.RunCommandMaxTimeout) {
			fail(w, fmt.Errorf("%w: timeout %q: want a duration up to %s", ErrBadInput, req.Timeout, time.Duration(protocol.RunCommandMaxTimeout)))
			return
		}
		timeout = d
	}
	insts, err := s.targetInstances(name, req.Target)
	if err != nil {
		fail(w, err)
		return
	}
	who := user(r)
	out := SSHResult{Results: make([]CommandResult, len(insts))}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, inst := range insts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res := s.runOn(r.Context(), inst, req.Command, timeout)
			out.Results[i] = res
			ev := store.AuditEvent{User: who, Deployment: name, Instance: res.Instance, Action: "ssh",
				ObjectType: "instance", Object: res.Instance, Result: store.ResultOK,
				Context: map[string]string{"command_sha256": commandDigest(req.Command), "exit_code": strconv.Itoa(res.ExitCode)}}
			switch {
			case res.Error != "":
				ev.Result, ev.Error = store.ResultFailed, res.Error
			case res.TimedOut:
				ev.Result, ev.Error = store.ResultFailed, "timed out after "+timeout.String()
			case res.ExitCode != 0:
				ev.Result = store.ResultFailed
			}
			s.audit(ev)
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) runOn(ctx context.Context, inst store.Instance, command string, timeout time.Duration) CommandResult {
	var agent remote.Agent
	if inst.AgentID != "" {
		agent = s.d.Remote.Agent(inst.AgentID)
	}
	return remote.Run(ctx, agent, inst, command, timeout)
}

// commandDigest is what the audit log keeps of an ssh command: its sha256,
// never its text, since a command line may carry a secret and audit events
// are listed with a read token and kept in backups. An operator who knows
// the command can match it (`sha256sum` of the text, no newline).
func commandDigest(cmd string) string {
	sum := sha256.Sum256([]byte(cmd))
	return hex.EncodeToString(sum[:])
}
