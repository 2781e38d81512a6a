package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
)

// fill sets every exported field of v (a pointer) to a value that is not
// zero, recursively, so that every field shows in its JSON.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if depth > 4 {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage{}) {
			v.SetBytes([]byte(`{"k":"v"}`))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(v.Index(i), depth+1)
		}
	}
}

// sameWire checks that what the director serves (server, every field set)
// decodes into the client's type (wire) without an unknown field, and
// encodes back to the same JSON; and the other way round.
func sameWire(t *testing.T, server, wire any) {
	t.Helper()
	check := func(from, to any) {
		t.Helper()
		src := reflect.New(reflect.TypeOf(from))
		fill(src.Elem(), 0)
		raw, err := json.Marshal(src.Interface())
		if err != nil {
			t.Fatal(err)
		}
		dst := reflect.New(reflect.TypeOf(to))
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(dst.Interface()); err != nil {
			t.Errorf("%T → %T: %v\n%s", from, to, err, raw)
			return
		}
		back, _ := json.Marshal(dst.Interface())
		var a, b any
		json.Unmarshal(raw, &a)
		json.Unmarshal(back, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%T → %T loses or changes fields:\n sent %s\n read %s", from, to, raw, back)
		}
	}
	check(server, wire)
	check(wire, server)
}

// TestRecordsAreServedAsAPIv1 keeps the records the director serves and
// the wire types its clients read (apiv1) the same, field by field.
func TestRecordsAreServedAsAPIv1(t *testing.T) {
	sameWire(t, store.Task{}, apiv1.Task{})
	sameWire(t, store.Event{}, apiv1.Event{})
	sameWire(t, store.Instance{}, apiv1.Instance{})
	sameWire(t, store.VM{}, apiv1.VM{})
	sameWire(t, store.Deployment{}, apiv1.Deployment{})
	sameWire(t, store.Config{}, apiv1.Config{})
	sameWire(t, store.Variable{}, apiv1.Variable{})
	sameWire(t, store.AuditEvent{}, apiv1.AuditEvent{})
	sameWire(t, store.ResurrectionSwitch{}, apiv1.ResurrectionSwitch{})
	sameWire(t, store.Disk{}, apiv1.Disk{})
	sameWire(t, store.Lock{}, apiv1.Lock{})
	sameWire(t, api.ReleaseView{}, apiv1.ReleaseView{})
	sameWire(t, api.StemcellView{}, apiv1.StemcellView{})
	sameWire(t, health.InstanceHealth{}, apiv1.HealthInstance{})
	sameWire(t, cloudcheck.Problem{}, apiv1.Problem{})
	if store.TaskQueued != apiv1.TaskQueued || store.TaskProcessing != apiv1.TaskProcessing || store.TaskCancelling != apiv1.TaskCancelling ||
		store.TaskDone != apiv1.TaskDone || store.TaskError != apiv1.TaskError || store.TaskCancelled != apiv1.TaskCancelled {
		t.Error("task states differ between the store and apiv1")
	}
	if health.StatusUnresponsive != "unresponsive" || health.StatusLate != "late" {
		t.Error("health statuses changed: update apiv1.HealthInstance's doc")
	}
}
