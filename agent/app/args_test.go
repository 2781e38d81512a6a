package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/app"
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--infrastructure", "vsphere"},
		{"--infrastructure", "local"},
		{"--base-dir", "", "--infrastructure", "aws"},
		{"--infrastructure", "aws", "extra"},
		{"--no-such-flag"},
	} {
		err := app.Run(context.Background(), args, io.Discard, io.Discard)
		var usage *app.UsageError
		if !errors.As(err, &usage) {
			t.Errorf("%v: err = %v, want a usage error", args, err)
		}
	}
	o, err := app.ParseArgs([]string{"--infrastructure", "openstack", "--config-drive", "/mnt/cd"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := o.Source().(settings.FirstOf); !ok || o.BaseDir != "/var/vcap" {
		t.Fatalf("openstack options %+v", o)
	}
}

// TestAgentFromAWSUserData starts an agent whose settings come from an
// IMDSv2 endpoint and checks it answers on the bus.
func TestAgentFromAWSUserData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, _ := pki.NewCA("ca", 0)
	srvKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	agentKP, _ := ca.IssueBootstrap("aws-agent")
	userData, _ := json.Marshal(map[string]any{
		"agent_id": "aws-agent",
		"mbus":     map[string]string{"url": bus.URL(), "ca_cert": string(ca.CertPEM()), "cert": string(agentKP.CertPEM), "key": string(agentKP.KeyPEM)},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tok")) })
	mux.HandleFunc("GET /latest/user-data", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != "tok" {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Write(userData)
	})
	mux.HandleFunc("GET /latest/meta-data/instance-id", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("i-0123456789abcdef0")) })
	imds := httptest.NewServer(mux)
	t.Cleanup(imds.Close)

	agentCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(agentCtx, []string{"--infrastructure", "aws", "--metadata-url", imds.URL, "--base-dir", filepath.Join(t.TempDir(), "vcap")}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
	dirKP, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c := client.New(nc, "aws-agent", client.Options{RequestTimeout: time.Second})
	for {
		err := c.Ping(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("agent never answered: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := c.GetState(ctx)
	if err != nil || st.AgentID != "aws-agent" || st.JobState != "running" {
		t.Fatalf("state %+v %v", st, err)
	}
}
