package settings

import (
	"sync"

	"github.com/compleat/compleat/agent/protocol"
)

// Holder is the agent's current settings, shared by its parts; updates are
// persisted through a Store and applied at once.
type Holder struct {
	store Store

	mu       sync.Mutex
	cur      Settings
	onChange []func(Settings)
}

// NewHolder holds s, recording updates in store.
func NewHolder(s Settings, store Store) *Holder {
	return &Holder{store: store, cur: s}
}

// Current returns the current settings.
func (h *Holder) Current() Settings {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// OnChange registers f to be called (outside the lock) after each update.
func (h *Holder) OnChange(f func(Settings)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onChange = append(h.onChange, f)
}

// Update checks u, persists it and applies it. A refused update is an
// error matching protocol.ErrBadArguments.
func (h *Holder) Update(u protocol.UpdateSettingsRequest) error {
	if err := h.Current().CheckUpdate(u); err != nil {
		return &protocol.Exception{Code: protocol.CodeBadArguments, Message: "update_settings: " + err.Error()}
	}
	if err := h.store.Update(u); err != nil {
		return err
	}
	h.mu.Lock()
	h.cur.Apply(u)
	cur, fs := h.cur, append([]func(Settings){}, h.onChange...)
	h.mu.Unlock()
	for _, f := range fs {
		f(cur)
	}
	return nil
}
