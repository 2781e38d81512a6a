package host

import "runtime"

// launcher runs functions on one goroutine locked to its OS thread for the
// launcher's whole life. Plugin processes are forked from it so that their
// parent-death signal (Linux) fires when the host dies, not when the Go
// runtime happens to retire the thread that forked them.
type launcher struct {
	reqs chan func()
}

func newLauncher() *launcher {
	l := &launcher{reqs: make(chan func())}
	go func() {
		// Never unlocked: when stop ends this goroutine, the runtime
		// ends the thread with it, after Close has stopped the plugin.
		runtime.LockOSThread()
		for f := range l.reqs {
			f()
		}
	}()
	return l
}

// run calls f on the launcher thread and waits for it.
func (l *launcher) run(f func()) {
	done := make(chan struct{})
	l.reqs <- func() {
		defer close(done)
		f()
	}
	<-done
}

func (l *launcher) stop() { close(l.reqs) }
