package cpimanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/cpimanager"
)

// CheckVM refuses a VM tagged for another director or another agent, and
// lets this director's VM (and one the CPI does not list) go; a run of
// checks lists the cloud once.
func TestCheckVMTagsFromOneListing(t *testing.T) {
	t.Parallel()
	dir, twoCPIs := pluginDir(t)
	cfg, _ := cpimanager.ParseConfig("cpi.yml", []byte(twoCPIs))
	l := &launcher{t: t}
	var mu sync.Mutex
	lists := 0
	m := cpimanager.New(cfg, cpimanager.Options{Launcher: l, SearchDirs: []string{dir}, Observer: func(c, method string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if method == "ListVMs" {
			lists++
		}
	}})
	defer m.Close()
	ctx := context.Background()
	c, err := m.Get(ctx, "local")
	if err != nil {
		t.Fatal(err)
	}
	stem, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img", CloudProperties: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	vm := func(director, agent string) string {
		tags := map[string]string{cpi.TagAgentID: agent}
		if director != "" {
			tags[cpi.TagDirector] = director
		}
		res, err := c.CreateVM(ctx, cpi.CreateVMRequest{AgentID: agent, StemcellCID: stem, CloudProperties: json.RawMessage(`{}`),
			Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, AgentSettings: json.RawMessage(`{}`), Tags: tags})
		if err != nil {
			t.Fatal(err)
		}
		return res.CID
	}
	mine, mine2, theirs, untagged := vm("me", "a1"), vm("me", "a2"), vm("other", "a3"), vm("", "a4")
	for _, tc := range []struct {
		cid, agent string
		foreign    bool
	}{
		{mine, "a1", false},
		{mine2, "", false},
		{mine2, "a1", true}, // tagged for a2
		{theirs, "a3", true},
		{untagged, "a4", false}, // not listed: the record decides
		{mine, "a1", false},
	} {
		err := m.CheckVM(ctx, "local", tc.cid, "me", tc.agent)
		if got := errors.Is(err, cpimanager.ErrForeign); got != tc.foreign {
			t.Errorf("CheckVM(%s, agent %q) = %v, want foreign %v", tc.cid, tc.agent, err, tc.foreign)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The untagged VM is not in the listing, so it was looked for in a new
	// one: two listings for six checks.
	if lists != 2 {
		t.Errorf("%d ListVMs calls for six checks, want 2", lists)
	}
}
