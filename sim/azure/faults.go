package azure

import (
	"strings"
	"time"
)

// Fault changes how the server answers the next requests that match it.
type Fault struct {
	// Method matches the request's method ("" any).
	Method string
	// Path is a substring of the lower-cased request path, such as
	// "/providers/microsoft.compute/virtualmachines/" ("" any).
	Path string
	// Count is how many matching requests the fault takes (0 means 1).
	Count int

	// Status, Code, Message and RetryAfter are the error answer (e.g. 429
	// "SubscriptionRequestsThrottled" with a Retry-After of a second).
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration

	// Async accepts the request as usual but ends its long-running
	// operation Failed with Code and Message (a VM that could not be
	// allocated).
	Async bool
	// Hang accepts the request but never ends its operation.
	Hang bool
}

// Inject adds a fault; faults are matched in the order they were added.
func (s *Server) Inject(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	f.Path = strings.ToLower(f.Path)
	s.mu.Lock()
	s.faults = append(s.faults, &f)
	s.mu.Unlock()
}

// ClearFaults drops every fault not yet used up.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

// matchFault takes one use of the first fault matching the request. The
// caller holds s.mu.
func (s *Server) matchFault(method, path string) *Fault {
	for i, f := range s.faults {
		if (f.Method == "" || strings.EqualFold(f.Method, method)) && strings.Contains(path, f.Path) {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
			return f
		}
	}
	return nil
}

// Hooks hear of what happens to VMs, so that a boot machinery can run a
// local VM for each. Methods are called without the server's lock held,
// from the goroutine that ends the operation; they should not block long.
type Hooks interface {
	// VMCreated is called when a VM's create has succeeded.
	VMCreated(vm VM)
	// VMRestarted is called when a restart has succeeded.
	VMRestarted(vm VM)
	// VMDisksChanged is called when a VM's data disks changed.
	VMDisksChanged(vm VM)
	// VMDeleted is called when a VM is gone.
	VMDeleted(id string)
	// DiskDeleted is called when a managed disk is gone.
	DiskDeleted(id string)
}

// VM is what the hooks learn of a VM.
type VM struct {
	ID           string
	Name         string
	ComputerName string
	// UserData is the VM's user data, base64 as the API takes it.
	UserData string
	// CustomData is the VM's custom data, base64 as the API takes it.
	CustomData string
	PrivateIPs []string
	DataDisks  []DataDisk
}

// DataDisk is one data disk of a VM.
type DataDisk struct {
	LUN    int
	DiskID string
	Name   string
	SizeGB int
	// Persistent is true for a disk that outlives the VM (deleteOption
	// Detach), false for one deleted with it (the ephemeral disk).
	Persistent bool
}

// NoHooks ignores everything.
type NoHooks struct{}

func (NoHooks) VMCreated(VM)       {}
func (NoHooks) VMRestarted(VM)     {}
func (NoHooks) VMDisksChanged(VM)  {}
func (NoHooks) VMDeleted(string)   {}
func (NoHooks) DiskDeleted(string) {}
