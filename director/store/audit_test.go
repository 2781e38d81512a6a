package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storesuite"
	"github.com/compleat/compleat/director/store/storetest"
)

func TestAuditEventsAppendAndFilter(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		s := b.Open(t, "state", store.Options{Now: func() time.Time { return now }})
		view(t, s, func(tx *store.Tx) error {
			evs, err := tx.AuditEvents(store.AuditFilter{})
			if err != nil || len(evs) != 0 {
				t.Errorf("empty log: %v, %v", evs, err)
			}
			return nil
		})
		add := func(e store.AuditEvent) store.AuditEvent {
			t.Helper()
			var out store.AuditEvent
			update(t, s, func(tx *store.Tx) error {
				var err error
				out, err = tx.AddAuditEvent(e)
				return err
			})
			now = now.Add(time.Minute)
			return out
		}
		first := add(store.AuditEvent{User: "admin", TaskID: 3, Deployment: "web", Action: "deploy", ObjectType: "deployment", Object: "web", Result: store.ResultOK})
		add(store.AuditEvent{User: "health-monitor", Deployment: "web", Instance: "web/abc", Action: "unresponsive", ObjectType: "vm", Object: "vm-1"})
		add(store.AuditEvent{User: "resurrector", Deployment: "web", Instance: "web/abc", Action: "resurrect", Result: store.ResultFailed, Error: "boom"})
		add(store.AuditEvent{User: "admin", Deployment: "db", Instance: "pg/1", Action: "deploy"})
		if first.ID != 1 || !first.Time.Equal(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)) {
			t.Errorf("first event = %+v", first)
		}
		err := s.Update(func(tx *store.Tx) error { _, err := tx.AddAuditEvent(store.AuditEvent{User: "x"}); return err })
		if err == nil {
			t.Error("event without action accepted")
		}

		ids := func(f store.AuditFilter) []uint64 {
			t.Helper()
			var out []uint64
			view(t, s, func(tx *store.Tx) error {
				evs, err := tx.AuditEvents(f)
				for _, e := range evs {
					out = append(out, e.ID)
				}
				return err
			})
			return out
		}
		for _, tc := range []struct {
			name string
			f    store.AuditFilter
			want []uint64
		}{
			{"all newest first", store.AuditFilter{}, []uint64{4, 3, 2, 1}},
			{"deployment", store.AuditFilter{Deployment: "web"}, []uint64{3, 2, 1}},
			{"instance", store.AuditFilter{Instance: "web/abc"}, []uint64{3, 2}},
			{"group", store.AuditFilter{Instance: "web"}, []uint64{3, 2}},
			{"action", store.AuditFilter{Action: "deploy"}, []uint64{4, 1}},
			{"since", store.AuditFilter{Since: time.Date(2026, 1, 1, 12, 2, 0, 0, time.UTC)}, []uint64{4, 3}},
			{"limit", store.AuditFilter{Limit: 2}, []uint64{4, 3}},
			{"before", store.AuditFilter{Before: 3}, []uint64{2, 1}},
			{"before past the end", store.AuditFilter{Before: 99, Limit: 1}, []uint64{4}},
		} {
			if got := ids(tc.f); !equalIDs(got, tc.want) {
				t.Errorf("%s: ids %v, want %v", tc.name, got, tc.want)
			}
		}
	})
}

func equalIDs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAuditLogSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *store.Tx) error {
		_, err := tx.AddAuditEvent(store.AuditEvent{User: "admin", Action: "deploy", Context: map[string]string{"reason": "x"}})
		return err
	})
	s.Close()
	s = storetest.Open(t, path, store.Options{})
	view(t, s, func(tx *store.Tx) error {
		evs, err := tx.AuditEvents(store.AuditFilter{})
		if err != nil || len(evs) != 1 || evs[0].Context["reason"] != "x" {
			t.Errorf("after reopen: %+v, %v", evs, err)
		}
		return nil
	})
	update(t, s, func(tx *store.Tx) error {
		e, err := tx.AddAuditEvent(store.AuditEvent{User: "admin", Action: "deploy"})
		if err == nil && e.ID != 2 {
			t.Errorf("second id = %d", e.ID)
		}
		return err
	})
}

func TestResurrectionSwitches(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		enabled := func(d, g string) bool {
			t.Helper()
			var on bool
			view(t, s, func(tx *store.Tx) error {
				var err error
				on, err = tx.ResurrectionEnabled(d, g)
				return err
			})
			return on
		}
		if !enabled("web", "web") || !enabled("web", "") {
			t.Fatal("resurrection is not on by default")
		}
		update(t, s, func(tx *store.Tx) error {
			return tx.PutResurrectionSwitch(store.ResurrectionSwitch{Deployment: "web", Enabled: false, User: "admin"})
		})
		if enabled("web", "web") || enabled("web", "") || !enabled("web2", "web") {
			t.Error("deployment switch off not applied to its groups only")
		}
		update(t, s, func(tx *store.Tx) error {
			return tx.PutResurrectionSwitch(store.ResurrectionSwitch{Deployment: "web", Group: "lb", Enabled: true})
		})
		if !enabled("web", "lb") || enabled("web", "web") {
			t.Error("group switch does not win over the deployment's")
		}
		view(t, s, func(tx *store.Tx) error {
			sw, err := tx.ResurrectionSwitches("web")
			if err != nil || len(sw) != 2 || sw[0].Group != "" || sw[1].Group != "lb" || sw[0].UpdatedAt.IsZero() {
				t.Errorf("switches = %+v, %v", sw, err)
			}
			return nil
		})
		update(t, s, func(tx *store.Tx) error { return tx.DeleteResurrectionSwitch("web", "") })
		if !enabled("web", "web") {
			t.Error("deleting the deployment switch did not restore the default")
		}
		if err := s.Update(func(tx *store.Tx) error {
			return tx.PutResurrectionSwitch(store.ResurrectionSwitch{Deployment: "a/b"})
		}); err == nil {
			t.Error("a deployment name with '/' was accepted")
		}
	})
}

func TestTaskAuditEvent(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		fin := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		e := store.TaskAuditEvent(store.Task{ID: 7, Type: "deploy", Description: "create deployment", Deployment: "web", User: "admin",
			State: store.TaskError, Error: "canary failed", FinishedAt: fin})
		if e.Action != "deploy" || e.TaskID != 7 || e.Result != store.ResultFailed || e.Error != "canary failed" || e.Object != "web" || !e.Time.Equal(fin) {
			t.Errorf("event = %+v", e)
		}
		update(t, s, func(tx *store.Tx) error { _, err := tx.AddAuditEvent(e); return err })
		if e := store.TaskAuditEvent(store.Task{Type: "upload-release", State: store.TaskDone}); e.Result != store.ResultOK || e.ObjectType != "" {
			t.Errorf("upload event = %+v", e)
		}
	})
}
