// Package apitest builds the complete dependencies an api.Server needs, for
// tests that exercise a few routes: each part a test does not set itself is
// one that refuses, naming itself ("no deploy pipeline in this test"), so a
// test that reaches a part it did not provide fails with a message saying
// which.
package apitest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/fleet"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Deps returns api.Deps over s, tasks, auth and logger with every other
// part filled: an empty metrics registry, an empty blob handler, no CPI, and
// refusing parts for the rest. A test replaces the fields it exercises.
func Deps(t testing.TB, s *store.Store, tasks *task.Manager, auth *api.Auth, logger *slog.Logger) api.Deps {
	t.Helper()
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return api.Deps{
		Store: s, Tasks: tasks, Auth: auth, Logger: logger,
		Metrics:  prometheus.NewRegistry(),
		Blobs:    http.NotFoundHandler(),
		Importer: Refusing{},
		Configs:  Refusing{},
		Deployer: Refusing{},
		Fleet:    Refusing{},
		Agents:   Refusing{},
		Disks:    Refusing{},
		CPIs:     func() []string { return nil },
		Health:   api.Health{Monitor: Refusing{}, CloudCheck: Refusing{}},
		Remote: api.Remote{
			Agent:  func(string) api.InstanceAgent { return Refusing{} },
			Blobs:  blobs,
			Signer: blobstore.NewSigner([]byte("apitest signing key, 32 bytes..")),
		},
		UploadDir: t.TempDir(),
	}
}

// Refusing is every part of api.Deps, failing each call with an error
// naming the part a test did not provide. Configs' Validate and Applied
// accept, so that configs can be stored.
type Refusing struct{}

func refuse(part string) error { return errors.New("no " + part + " in this test") }

var (
	_ api.Importer      = Refusing{}
	_ api.Configs       = Refusing{}
	_ api.Deployer      = Refusing{}
	_ api.Fleet         = Refusing{}
	_ api.Agents        = Refusing{}
	_ api.DiskDeleter   = Refusing{}
	_ api.HealthMonitor = Refusing{}
	_ api.CloudChecker  = Refusing{}
	_ api.InstanceAgent = Refusing{}
)

func (Refusing) ImportRelease(context.Context, *task.Reporter, string) (string, error) {
	return "", refuse("release importer")
}
func (Refusing) ImportStemcell(context.Context, *task.Reporter, string) (string, error) {
	return "", refuse("stemcell importer")
}
func (Refusing) Validate(string, string, []byte) error { return nil }
func (Refusing) Applied(store.Config) error            { return nil }
func (Refusing) Deploy(context.Context, *task.Reporter, api.DeployRequest) (string, error) {
	return "", refuse("deploy pipeline")
}
func (Refusing) Delete(context.Context, *task.Reporter, string, bool) (string, error) {
	return "", refuse("deploy pipeline")
}
func (Refusing) ChangeState(context.Context, *task.Reporter, api.StateRequest) (string, error) {
	return "", refuse("deploy pipeline")
}
func (Refusing) Errands(context.Context, string) ([]api.ErrandInfo, error) {
	return nil, refuse("errand runner")
}
func (Refusing) RunErrand(context.Context, *task.Reporter, api.ErrandRequest) (string, error) {
	return "", refuse("errand runner")
}
func (Refusing) RegenerateVariable(context.Context, *task.Reporter, string, string) (string, error) {
	return "", refuse("variable regenerator")
}
func (Refusing) Pause(string) error { return refuse("rollout") }
func (Refusing) RotateAgentCerts(context.Context, *task.Reporter, string) (string, error) {
	return "", refuse("deploy pipeline")
}
func (Refusing) UpgradeStemcell(context.Context, *task.Reporter, fleet.UpgradeRequest) (string, error) {
	return "", refuse("fleet")
}
func (Refusing) DeleteRelease(context.Context, *task.Reporter, string, string) (string, error) {
	return "", refuse("fleet")
}
func (Refusing) DeleteStemcell(context.Context, *task.Reporter, string, string) (string, error) {
	return "", refuse("fleet")
}
func (Refusing) CleanUp(context.Context, *task.Reporter, bool) (string, error) {
	return "", refuse("fleet")
}
func (Refusing) State(context.Context, string) (json.RawMessage, error) {
	return nil, refuse("agents")
}
func (Refusing) DeleteDisk(context.Context, string, string) error { return refuse("disk deleter") }
func (Refusing) Deployment(string) []health.InstanceHealth        { return nil }
func (Refusing) Scan(context.Context, string) ([]cloudcheck.Problem, error) {
	return nil, refuse("cloud-check")
}
func (Refusing) Report(context.Context, string, string, []cloudcheck.Problem) {}
func (Refusing) Resolve(context.Context, string, map[string]string, bool, string) ([]cloudcheck.Result, error) {
	return nil, refuse("cloud-check")
}
func (Refusing) FetchLogs(context.Context, protocol.FetchLogsRequest) (protocol.FetchLogsResult, error) {
	return protocol.FetchLogsResult{}, refuse("agent")
}
func (Refusing) TailLogs(context.Context, protocol.TailLogsRequest) (protocol.TailLogsResult, error) {
	return protocol.TailLogsResult{}, refuse("agent")
}
func (Refusing) RunCommand(context.Context, protocol.RunCommandRequest) (protocol.RunCommandResult, error) {
	return protocol.RunCommandResult{}, refuse("agent")
}

// New is api.New(d), failing t when d lacks a part.
func New(t testing.TB, d api.Deps) *api.Server {
	t.Helper()
	s, err := api.New(d)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
