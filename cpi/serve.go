package cpi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// The names a plugin and its host agree on.
const (
	// PropertiesEnv is the environment variable holding the plugin's
	// properties: one JSON object from the director's cpi config. It may
	// hold credentials.
	PropertiesEnv = "COMPLEAT_CPI_PROPERTIES"

	// ProtocolVersion is the version of the wire protocol (cpi/v1) that
	// plugin and host negotiate at start. It is distinct from APIVersion,
	// the BOSH CPI API version of the method set.
	ProtocolVersion = 1

	// PluginName is the name of the one plugin a CPI binary serves.
	PluginName = "cpi"

	// JSONModeArg is the single argument that makes Serve answer one
	// BOSH-style JSON request on stdin instead of serving gRPC (see
	// ServeJSON).
	JSONModeArg = "json"
)

// Handshake is the handshake of CPI plugins: the magic cookie that tells a
// binary it was started by a Compleat host, and the base protocol version.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolVersion,
		MagicCookieKey:   "COMPLEAT_CPI_PLUGIN",
		MagicCookieValue: "7f3c2a9e5b1d4c8f-compleat-cpi",
	}
}

// PluginSets is the versioned plugin set of a CPI binary, for go-plugin's
// ServeConfig and ClientConfig. The host passes a nil impl.
func PluginSets(impl CPI) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &grpcPlugin{impl: impl}},
	}
}

// grpcPlugin is the go-plugin glue: the server side registers the CPI
// service, the client side wraps the connection in NewGRPCClient.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl CPI
}

func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	RegisterGRPCServer(s, p.impl)
	return nil
}

func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewGRPCClient(c), nil
}

// Serve runs impl as a plugin and returns only when the host is done with
// it. Most plugins call Main, which builds impl and calls Serve, reporting
// a failure to build it to the user.
//
// Started by a host (cpi/host), it speaks gRPC over go-plugin with the
// handshake above and automatic mutual TLS, and logs JSON on stderr, which
// the host re-emits through its own logger. Started with the single
// argument "json", it answers one BOSH-style request instead (ServeJSON) and
// exits. Started any other way, it explains that it is a plugin and exits
// with status 1.
func Serve(impl CPI) {
	if len(os.Args) == 2 && os.Args[1] == JSONModeArg {
		os.Exit(ServeJSON(context.Background(), impl, os.Stdin, os.Stdout))
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake(),
		VersionedPlugins: PluginSets(impl),
		GRPCServer:       newGRPCServer,
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "cpi",
			JSONFormat: true,
			Output:     stderr(),
			Level:      hclog.Info,
		}),
	})
}

// newGRPCServer is the plugin's gRPC server: go-plugin's options (TLS) and
// a few goroutines that take the calls in turn. Without them every call
// runs on a new goroutine whose stack grows from its minimum on each call
// (runtime.morestack: about a seventh of a plugin's CPU per HasVM);
// when all are busy a call gets a goroutine of its own as before.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, grpc.NumStreamWorkers(streamWorkers))...)
}

// streamWorkers is the number of goroutines newGRPCServer keeps for calls.
const streamWorkers = 4

// Main is the whole main function of a plugin: it builds the CPI with
// newCPI from the plugin's properties (COMPLEAT_CPI_PROPERTIES) and a logger
// (Logger), then serves it (Serve):
//
//	func main() { cpi.Main(mycloud.New) }
//
// where mycloud.New is func(properties json.RawMessage, logger *slog.Logger)
// (cpi.CPI, error). When newCPI fails (missing credentials, a bad region),
// the error reaches the user: a host that started the plugin reports it as
// the reason the plugin did not start (not as a handshake failure), JSON mode
// answers it as the call's error, and run by hand the plugin prints it. The
// error's text must not hold the properties' secrets.
func Main(newCPI func(properties json.RawMessage, logger *slog.Logger) (CPI, error)) {
	impl, err := build(newCPI)
	if err != nil {
		os.Exit(startupFailed(err, os.Stdout))
	}
	Serve(impl)
}

// build calls newCPI, turning a panic into the startup error.
func build(newCPI func(json.RawMessage, *slog.Logger) (CPI, error)) (impl CPI, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	impl, err = newCPI(Properties(), Logger())
	if err == nil && impl == nil {
		err = fmt.Errorf("no CPI and no error")
	}
	return impl, err
}

// StartupErrorPrefix starts the line a plugin that cannot start writes on
// stdout instead of go-plugin's handshake; the host (cpi/host) reads the
// JSON object that follows, {"error": "..."}, and reports its error.
const StartupErrorPrefix = "COMPLEAT_CPI_STARTUP_ERROR "

// startupWait bounds how long a plugin that failed to start waits, after
// telling its host, for the host to read the line and stop it: exiting at
// once could win the race against the host's read of stdout.
const startupWait = 10 * time.Second

// startupFailed tells whoever started the plugin that it could not start,
// in the form they read, and returns the exit status.
func startupFailed(err error, stdout io.Writer) int {
	msg := "start: " + err.Error()
	switch {
	case len(os.Args) == 2 && os.Args[1] == JSONModeArg:
		resp := JSONResponse{Result: json.RawMessage("null"), Error: &JSONError{Type: "Bosh::Clouds::CpiError", Message: msg, Code: CodeUnknown}}
		_ = json.NewEncoder(stdout).Encode(resp)
		return 0
	case os.Getenv(Handshake().MagicCookieKey) == Handshake().MagicCookieValue:
		b, _ := json.Marshal(map[string]string{"error": msg})
		// go-plugin splits a handshake line at "|": keep the line one field.
		line := strings.ReplaceAll(string(b), "|", `\u007c`)
		fmt.Fprintln(stdout, StartupErrorPrefix+line)
		Logger().Error("cpi plugin cannot start", "error", err)
		time.Sleep(startupWait) // the host kills the plugin once it has read the line
		return 1
	default:
		fmt.Fprintf(os.Stderr, "%s: %s\n", filepath.Base(os.Args[0]), msg)
		return 1
	}
}

// Properties returns the plugin's properties from COMPLEAT_CPI_PROPERTIES
// ({} when unset). They may hold credentials: never log them.
func Properties() json.RawMessage {
	v := strings.TrimSpace(os.Getenv(PropertiesEnv))
	if v == "" {
		return json.RawMessage(`{}`)
	}
	return json.RawMessage(v)
}

// Logger returns the logger a plugin logs with: JSON lines on the process's
// standard error in the shape the host parses (hclog's @level, @message,
// @timestamp), so that every record reappears in the director's log with
// its level and attributes.
func Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(stderr(), &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: hclogKeys,
	}))
}

// stderr writes to file descriptor 2 itself: go-plugin replaces os.Stderr
// with a pipe while serving, and logs must reach the host's stderr reader.
func stderr() io.Writer { return fd2{} }

type fd2 struct{}

func (fd2) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Write(2, p[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}

// hclogTime is the timestamp layout the host's log parser accepts.
const hclogTime = "2006-01-02T15:04:05.000000Z07:00"

func hclogKeys(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format(hclogTime))
	case slog.LevelKey:
		l, _ := a.Value.Any().(slog.Level)
		switch {
		case l < slog.LevelInfo:
			return slog.String("@level", "debug")
		case l < slog.LevelWarn:
			return slog.String("@level", "info")
		case l < slog.LevelError:
			return slog.String("@level", "warn")
		default:
			return slog.String("@level", "error")
		}
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}
