package host_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// A host that speaks only a protocol version the plugin does not serve is
// refused at the handshake instead of talking past it.
func TestProtocolVersionNegotiation(t *testing.T) {
	for _, tc := range []struct {
		versions []int
		ok       bool
	}{
		{[]int{cpi.ProtocolVersion}, true},
		{[]int{cpi.ProtocolVersion, cpi.ProtocolVersion + 1}, true}, // a newer host still speaks v1
		{[]int{cpi.ProtocolVersion + 1}, false},
	} {
		sets := map[int]plugin.PluginSet{}
		for _, v := range tc.versions {
			sets[v] = cpi.PluginSets(nil)[cpi.ProtocolVersion]
		}
		client := plugin.NewClient(&plugin.ClientConfig{
			HandshakeConfig:  cpi.Handshake(),
			VersionedPlugins: sets,
			Cmd:              exec.Command(fakePlugin),
			SkipHostEnv:      true,
			AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
			AutoMTLS:         true,
			StartTimeout:     10 * time.Second,
			Logger:           hclog.NewNullLogger(),
		})
		_, err := client.Client()
		got := client.NegotiatedVersion()
		client.Kill()
		if tc.ok && (err != nil || got != cpi.ProtocolVersion) {
			t.Errorf("host versions %v: err %v, negotiated %d", tc.versions, err, got)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "version")) {
			t.Errorf("host versions %v: err %v, want a version mismatch", tc.versions, err)
		}
	}
}
