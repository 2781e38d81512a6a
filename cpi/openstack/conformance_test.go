package openstack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

func conformanceConfig(t *testing.T, c *testCloud) cpitest.Config {
	cfg := cpitest.Config{
		Stemcell:                 c.lightStemcell(t),
		VMCloudProperties:        c.vmProps(),
		DiskCloudProperties:      json.RawMessage(`{"type": "standard"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "` + c.flavor + `", "root_disk": {"size": "big"}}`),
		InvalidField:             "root_disk.size",
		Networks:                 c.networks,
		Timeout:                  2 * time.Minute,
	}
	if c.sim != nil {
		cfg.DeliveredSettings = c.userData
	}
	if live() {
		cfg.DiskCloudProperties = json.RawMessage(`{}`)
		cfg.Timeout = 20 * time.Minute
	}
	return cfg
}

// The suite in-process over real gRPC.
func TestConformanceInProcess(t *testing.T) {
	c := cloudUnderTest(t)
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return c.newCPI(t, nil) }, conformanceConfig(t, c))
}

// The suite against the cpi-openstack binary, properties in
// COMPLEAT_CPI_PROPERTIES: started through cpi/host and kept running, and
// called the BOSH way (a process per call, JSON on stdin), which works
// because the plugin keeps all its state in the cloud.
func TestConformanceBinary(t *testing.T) {
	c := cloudUnderTest(t)
	bin := pluginBinary(t)
	cfg := conformanceConfig(t, c)
	props := c.propsJSON(t, nil)
	t.Run("grpc", func(t *testing.T) { cpitest.RunBinary(t, bin, props, cfg) })
	t.Run("json", func(t *testing.T) { cpitest.RunJSON(t, bin, props, cfg) })
}

// userData is what the server's agent reads from the metadata service as
// its settings.
func (c *testCloud) userData(_ context.Context, cid string) (json.RawMessage, error) {
	rec := httptest.NewRecorder()
	c.sim.MetadataHandler(cid).ServeHTTP(rec, httptest.NewRequest("GET", "/openstack/latest/user_data", nil))
	if rec.Code != 200 {
		return nil, fmt.Errorf("metadata service of %s: GET /openstack/latest/user_data: %d %s", cid, rec.Code, rec.Body)
	}
	return rec.Body.Bytes(), nil
}
