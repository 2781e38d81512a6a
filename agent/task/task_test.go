package task_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/task"
)

func TestTaskLifecycle(t *testing.T) {
	m := task.New(nil)
	t.Cleanup(m.Close)
	ctx := context.Background()

	ok := m.Start(ctx, "apply", func(context.Context) (any, error) { return 42, nil })
	if ok.State != task.Running || ok.ID == "" {
		t.Fatalf("start status %+v", ok)
	}
	st, err := m.Wait(ctx, ok.ID)
	if err != nil || st.State != task.Done || st.Result != 42 {
		t.Fatalf("done status %+v %v", st, err)
	}

	boom := errors.New("boom")
	bad := m.Start(ctx, "apply", func(context.Context) (any, error) { return nil, boom })
	if st, _ := m.Wait(ctx, bad.ID); st.State != task.Failed || !errors.Is(st.Err, boom) {
		t.Fatalf("failed status %+v", st)
	}

	panicky := m.Start(ctx, "apply", func(context.Context) (any, error) { panic("oops") })
	if st, _ := m.Wait(ctx, panicky.ID); st.State != task.Failed {
		t.Fatalf("panic status %+v", st)
	}

	started := make(chan struct{})
	long := m.Start(ctx, "drain", func(ctx context.Context) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, context.Cause(ctx)
	})
	<-started
	if !m.Cancel(long.ID) {
		t.Fatal("cancel: no such task")
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := m.Wait(wctx, long.ID); err != nil || st.State != task.Canceled || !errors.Is(st.Err, task.ErrCanceled) {
		t.Fatalf("cancelled status %+v %v", st, err)
	}
	if m.Cancel("nope") {
		t.Fatal("cancelled an unknown task")
	}
	if _, ok := m.Get("nope"); ok {
		t.Fatal("found an unknown task")
	}
}
