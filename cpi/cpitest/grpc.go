package cpitest

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/host"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// ServeInProcess serves impl over real gRPC on a loopback listener
// (127.0.0.1, a port from the kernel) and returns a client for it: the same
// server and client code a plugin binary and the host use, without the
// process. Everything is stopped in t.Cleanup. Dial options (an interceptor
// such as cpi.ObserveCalls) go on the client's connection.
func ServeInProcess(t testing.TB, impl cpi.CPI, opts ...grpc.DialOption) cpi.CPI {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cpitest: listen on loopback: %v", err)
	}
	srv := grpc.NewServer()
	cpi.RegisterGRPCServer(srv, impl)
	go func() { _ = srv.Serve(lis) }()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), opts...)
	if err != nil {
		srv.Stop()
		t.Fatalf("cpitest: dial %s: %v", lis.Addr(), err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return cpi.NewGRPCClient(conn)
}

// RunInProcess runs the conformance suite against the CPIs newImpl returns
// (one per subtest), each served over real gRPC in-process, so that errors,
// documents and capabilities are checked across the wire exactly as a plugin
// binary would send them. An implementation that is a SettingsReader is
// asked for delivered settings directly.
func RunInProcess(t *testing.T, newImpl func(t *testing.T) cpi.CPI, cfg Config) {
	t.Helper()
	Run(t, func(t *testing.T) cpi.CPI {
		impl := newImpl(t)
		client := ServeInProcess(t, impl)
		if r, ok := impl.(SettingsReader); ok {
			return struct {
				cpi.CPI
				SettingsReader
			}{client, r}
		}
		return client
	}, cfg)
}

// RunBinary runs the conformance suite against a built plugin binary,
// started through cpi/host with the given properties (one plugin process per
// subtest; the process's log goes to t.Log).
func RunBinary(t *testing.T, path string, properties json.RawMessage, cfg Config) {
	t.Helper()
	Run(t, func(t *testing.T) cpi.CPI { return StartBinary(t, path, properties) }, cfg)
}

// RunJSON runs the conformance suite against a plugin binary called the
// BOSH way: a new process per call, `<path> json` with the request on stdin
// (host.NewJSONProcess). Only plugins that keep their state outside the
// process (on disk, in the cloud) and serialise concurrent processes can
// pass it.
func RunJSON(t *testing.T, path string, properties json.RawMessage, cfg Config) {
	t.Helper()
	Run(t, func(*testing.T) cpi.CPI { return host.NewJSONProcess(path, properties) }, cfg)
}

// StartBinary starts a plugin binary through cpi/host and stops it in
// t.Cleanup.
func StartBinary(t testing.TB, path string, properties json.RawMessage) *host.Plugin {
	t.Helper()
	ctx := t.Context()
	p, err := host.Start(ctx, host.Config{
		Path:         path,
		Properties:   properties,
		StartTimeout: 30 * time.Second,
		Logger:       testLogger(t),
	})
	if err != nil {
		t.Fatalf("cpitest: start plugin %s: %v", path, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
