package protocol_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/protocol"
)

// TestExceptionsRoundTrip sends every sentinel through the wire format and
// checks errors.Is still matches it, wrapped, on the other side.
func TestExceptionsRoundTrip(t *testing.T) {
	sentinels := []*protocol.Exception{
		protocol.ErrUnknownMethod, protocol.ErrBadArguments, protocol.ErrFailed, protocol.ErrTaskNotFound,
		protocol.ErrCanceled, protocol.ErrBusy, protocol.ErrBlobMismatch, protocol.ErrNotSupported,
	}
	for _, s := range sentinels {
		b, _ := json.Marshal(protocol.Response{Exception: &protocol.Exception{Code: s.Code, Message: "details", Log: "tail"}})
		var r protocol.Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		err := fmt.Errorf("apply agent a1: %w", r.Exception)
		for _, other := range sentinels {
			if got, want := errors.Is(err, other), other == s; got != want {
				t.Errorf("errors.Is(%s, %s) = %v", s.Code, other.Code, got)
			}
		}
		if r.Exception.Error() != "details" || r.Exception.Log != "tail" {
			t.Errorf("exception %+v", r.Exception)
		}
	}
}

func TestDuration(t *testing.T) {
	var v struct{ D protocol.Duration }
	for in, want := range map[string]time.Duration{`{"D":"1m30s"}`: 90 * time.Second, `{"D":2.5}`: 2500 * time.Millisecond} {
		if err := json.Unmarshal([]byte(in), &v); err != nil || time.Duration(v.D) != want {
			t.Errorf("%s: %v %v", in, time.Duration(v.D), err)
		}
	}
	if err := json.Unmarshal([]byte(`{"D":"soon"}`), &v); err == nil {
		t.Error("accepted soon")
	}
	b, _ := json.Marshal(struct{ D protocol.Duration }{protocol.Duration(5 * time.Second)})
	if string(b) != `{"D":"5s"}` {
		t.Errorf("marshal %s", b)
	}
}

func TestNewRequest(t *testing.T) {
	r, err := protocol.NewRequest(protocol.MethodPing, nil)
	if err != nil || len(r.Arguments) != 0 {
		t.Fatalf("%+v %v", r, err)
	}
	r, _ = protocol.NewRequest(protocol.MethodGetTask, protocol.TaskRequest{AgentTaskID: "t"})
	b, _ := json.Marshal(r)
	if string(b) != `{"method":"get_task","arguments":[{"agent_task_id":"t"}]}` {
		t.Fatalf("%s", b)
	}
	if protocol.Subject("a") != "agent.a" || protocol.HeartbeatSubject("a") != "hm.agent.heartbeat.a" || protocol.AlertSubject("a") != "hm.agent.alert.a" {
		t.Fatal("subjects")
	}
}
