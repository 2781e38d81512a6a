// Package settings reads the agent's settings: who the agent is, how to reach
// the director's message bus, which CA signs the blob URLs' server, the VM's
// networks and disks.
//
// The document is JSON (see docs/agent.md):
//
//	{"agent_id": "...", "vm": {"cid": "..."},
//	 "mbus": {"url": "nats://127.0.0.1:4222", "ca_cert": PEM, "cert": PEM, "key": PEM},
//	 "blobstore": {"ca_cert": PEM},
//	 "networks": {"default": {"type": "manual", "ip": "127.77.0.5", ...}},
//	 "disks": {"persistent": {"<disk cid>": {"path": "..."}}},
//	 "env": {...}, "heartbeat_interval": "5s"}
//
// The infrastructure delivers it: a file (local CPI), AWS instance user data,
// Azure IMDS user data, an OpenStack config drive or metadata service. Each
// delivery channel is a Source. The agent keeps a copy of what it read under
// its base directory, and uses it when the source is unreachable on a later
// boot; changes made by the director (update_settings) are layered on top.
package settings

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
)

// DefaultHeartbeatInterval is used when the settings name none.
const DefaultHeartbeatInterval = 5 * time.Second

// Settings is the agent's settings document.
type Settings struct {
	AgentID           string                 `json:"agent_id"`
	VM                VM                     `json:"vm"`
	Mbus              Mbus                   `json:"mbus"`
	Blobstore         Blobstore              `json:"blobstore"`
	Networks          map[string]cpi.Network `json:"networks,omitempty"`
	Disks             Disks                  `json:"disks"`
	Env               json.RawMessage        `json:"env,omitempty"`
	HeartbeatInterval protocol.Duration      `json:"heartbeat_interval,omitempty"`
}

// VM identifies the VM in its cloud.
type VM struct {
	CID string `json:"cid"`
}

// Mbus is how to reach the director's message bus. CACert, Cert and Key are
// PEM; Key is a secret.
type Mbus struct {
	URL string `json:"url"`
	// URLs, when set, are every bus server's address (several directors
	// whose servers form a cluster): the agent connects to any of them,
	// and to another when the one it is on goes. URL is among them.
	URLs   []string `json:"urls,omitempty"`
	CACert string   `json:"ca_cert"`
	Cert   string   `json:"cert"`
	Key    string   `json:"key"`
}

// Blobstore holds the CA of the server behind signed blob URLs. An empty
// CACert means the system roots.
type Blobstore struct {
	CACert string `json:"ca_cert,omitempty"`
}

// Disks are the VM's disks as the CPI described them.
type Disks struct {
	// Persistent maps a disk cid to the hint AttachDisk returned.
	Persistent map[string]cpi.DiskHint `json:"persistent,omitempty"`
	// Ephemeral is the ephemeral disk's device, if the cloud has one.
	Ephemeral string `json:"ephemeral,omitempty"`
}

// Parse decodes and validates a settings document. Errors name the field
// (and, for malformed JSON, the line) at fault; source names the origin.
func Parse(source string, data []byte) (Settings, error) {
	var s Settings
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&s); err != nil {
		return Settings{}, fmt.Errorf("settings from %s: %w", source, describeJSONError(data, err))
	}
	if err := s.Validate(); err != nil {
		return Settings{}, fmt.Errorf("settings from %s: %w", source, err)
	}
	return s, nil
}

func describeJSONError(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("line %d: %w", lineOf(data, se.Offset), err)
	case errors.As(err, &te):
		return fmt.Errorf("line %d: field %s: want %s, got %s", lineOf(data, te.Offset), te.Field, te.Type, te.Value)
	}
	return err
}

func lineOf(data []byte, offset int64) int {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	return 1 + strings.Count(string(data[:offset]), "\n")
}

// Validate checks the fields the agent cannot run without.
func (s *Settings) Validate() error {
	switch {
	case s.AgentID == "":
		return errors.New("field agent_id: required")
	case !validID(s.AgentID):
		return fmt.Errorf("field agent_id %q: only letters, digits, '-' and '_'", s.AgentID)
	case s.Mbus.URL == "":
		return errors.New("field mbus.url: required")
	case s.Mbus.CACert == "":
		return errors.New("field mbus.ca_cert: required")
	case s.Mbus.Cert == "":
		return errors.New("field mbus.cert: required")
	case s.Mbus.Key == "":
		return errors.New("field mbus.key: required")
	case s.HeartbeatInterval < 0:
		return errors.New("field heartbeat_interval: negative")
	}
	if !busURL(s.Mbus.URL) {
		return fmt.Errorf("field mbus.url %q: want nats://host:port", s.Mbus.URL)
	}
	if len(s.Mbus.URLs) > 16 {
		return fmt.Errorf("field mbus.urls: %d addresses, at most 16", len(s.Mbus.URLs))
	}
	for i, u := range s.Mbus.URLs {
		if !busURL(u) {
			return fmt.Errorf("field mbus.urls[%d] %q: want nats://host:port", i, u)
		}
	}
	return nil
}

func busURL(u string) bool {
	return (strings.HasPrefix(u, "nats://") || strings.HasPrefix(u, "tls://")) && !strings.Contains(u, ",")
}

// Servers are the bus servers to connect to: URL, then the other URLs.
func (m Mbus) Servers() []string {
	out := []string{m.URL}
	for _, u := range m.URLs {
		if u != m.URL {
			out = append(out, u)
		}
	}
	return out
}

func validID(id string) bool {
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return len(id) <= 128
}

// Heartbeat is the heartbeat interval, defaulted.
func (s Settings) Heartbeat() time.Duration {
	if s.HeartbeatInterval <= 0 {
		return DefaultHeartbeatInterval
	}
	return time.Duration(s.HeartbeatInterval)
}

// IP is the VM's address on its default network (the one whose default
// list holds "gateway", else the first by name). Empty when there is none.
func (s Settings) IP() string {
	var first string
	for name, n := range s.Networks {
		for _, d := range n.Default {
			if d == "gateway" {
				return n.IP
			}
		}
		if first == "" || name < first {
			first = name
		}
	}
	if first == "" {
		return ""
	}
	return s.Networks[first].IP
}

// Apply layers an update_settings request onto s.
func (s *Settings) Apply(u protocol.UpdateSettingsRequest) {
	if u.Disks != nil {
		s.Disks.Persistent = u.Disks
	}
	if u.BlobstoreCACert != "" {
		s.Blobstore.CACert = u.BlobstoreCACert
	}
	if len(u.Env) > 0 {
		s.Env = u.Env
	}
	if u.HeartbeatInterval > 0 {
		s.HeartbeatInterval = u.HeartbeatInterval
	}
	if u.Mbus != nil {
		s.Mbus.Cert, s.Mbus.Key = u.Mbus.Cert, u.Mbus.Key
	}
}

// CheckUpdate refuses an update the agent could not run with: a bus
// certificate that does not parse, does not match its key, or names
// another agent.
func (s Settings) CheckUpdate(u protocol.UpdateSettingsRequest) error {
	if u.Mbus == nil {
		return nil
	}
	pair, err := tls.X509KeyPair([]byte(u.Mbus.Cert), []byte(u.Mbus.Key))
	if err != nil {
		return fmt.Errorf("field mbus: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("field mbus.cert: %w", err)
	}
	if leaf.Subject.CommonName != s.AgentID {
		return fmt.Errorf("field mbus.cert: common name %q is not the agent id %q", leaf.Subject.CommonName, s.AgentID)
	}
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("field mbus.cert: expired at %s", leaf.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// Source is one delivery channel of the settings document.
type Source interface {
	// Fetch returns the raw document.
	Fetch(ctx context.Context) ([]byte, error)
	// String names the source in errors and logs.
	String() string
}

// Store keeps settings under a directory (<base>/bosh): the last document
// read from the source and the director's updates.
type Store struct {
	Dir string
}

const (
	cacheFile   = "settings.json"
	updatesFile = "update_settings.json"
)

// Load reads the settings from src, caches them, and layers the director's
// updates on top. When src fails and a cached copy exists, the cache is used
// and the source's error logged as a warning.
func (st Store) Load(ctx context.Context, src Source, logger *slog.Logger) (Settings, error) {
	raw, ferr := src.Fetch(ctx)
	var s Settings
	if ferr == nil {
		var err error
		s, err = Parse(src.String(), raw)
		if err != nil {
			return Settings{}, err
		}
		if err := writeFile(filepath.Join(st.Dir, cacheFile), raw); err != nil {
			return Settings{}, fmt.Errorf("cache settings: %w", err)
		}
	} else {
		cached, err := os.ReadFile(filepath.Join(st.Dir, cacheFile))
		if err != nil {
			return Settings{}, fmt.Errorf("read settings from %s: %w", src, ferr)
		}
		s, err = Parse(filepath.Join(st.Dir, cacheFile), cached)
		if err != nil {
			return Settings{}, err
		}
		logger.Warn("settings source unavailable; using the cached copy", "source", src.String(), "err", ferr)
	}
	u, err := st.updates()
	if err != nil {
		return Settings{}, err
	}
	s.Apply(u)
	return s, nil
}

// Update records u (merged with earlier updates) so that it survives a
// restart.
func (st Store) Update(u protocol.UpdateSettingsRequest) error {
	cur, err := st.updates()
	if err != nil {
		return err
	}
	if u.Disks != nil {
		cur.Disks = u.Disks
	}
	if u.BlobstoreCACert != "" {
		cur.BlobstoreCACert = u.BlobstoreCACert
	}
	if len(u.Env) > 0 {
		cur.Env = u.Env
	}
	if u.HeartbeatInterval > 0 {
		cur.HeartbeatInterval = u.HeartbeatInterval
	}
	if u.Mbus != nil {
		cur.Mbus = u.Mbus
	}
	b, err := json.MarshalIndent(cur, "", "  ")
	if err != nil {
		return fmt.Errorf("encode settings updates: %w", err)
	}
	return writeFile(filepath.Join(st.Dir, updatesFile), b)
}

func (st Store) updates() (protocol.UpdateSettingsRequest, error) {
	var u protocol.UpdateSettingsRequest
	p := filepath.Join(st.Dir, updatesFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return u, fmt.Errorf("read settings updates: %w", err)
	}
	if err := json.Unmarshal(b, &u); err != nil {
		return u, fmt.Errorf("settings updates %s: %w", p, describeJSONError(b, err))
	}
	return u, nil
}

// writeFile writes data atomically with mode 0600 (settings hold a key).
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
