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

// do hands f to the launcher thread (waiting for it to finish what it was
// doing) and returns at once; f reports its own completion.
func (l *launcher) do(f func()) {
	l.reqs <- f
}

func (l *launcher) stop() { close(l.reqs) }
