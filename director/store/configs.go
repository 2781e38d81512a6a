package store

import (
	"fmt"
	"time"
)

// Config types the director knows.
const (
	ConfigCloud   = "cloud"
	ConfigRuntime = "runtime"
	ConfigCPI     = "cpi"
)

// Config is one version of a named config of a type. Every update adds a
// version; the latest of a (type, name) is the one in force.
type Config struct {
	ID        uint64    `json:"id"`
	Type      string    `json:"type"`
	Name      string    `json:"name"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"created_at"`
}

// AddConfig stores a new version of a config and returns it with its id. When
// the content equals the latest version's, nothing is added and that version is
// returned with changed=false.
func (t *Tx) AddConfig(typ, name, content string) (c Config, changed bool, err error) {
	if name == "" {
		name = "default"
	}
	latest, err := t.LatestConfig(typ, name)
	if err == nil && latest.Content == content {
		return latest, false, nil
	}
	b := t.tx.Bucket(bucketConfigs)
	id, err := b.NextSequence()
	if err != nil {
		return c, false, fmt.Errorf("next config id: %w", err)
	}
	c = Config{ID: id, Type: typ, Name: name, Content: content, CreatedAt: t.now().UTC()}
	return c, true, t.put(bucketConfigs, itob(id), c)
}

// LatestConfig returns the newest version of a (type, name) config; name ""
// means "default".
func (t *Tx) LatestConfig(typ, name string) (Config, error) {
	if name == "" {
		name = "default"
	}
	c := t.tx.Bucket(bucketConfigs).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		var cfg Config
		if err := decode(v, &cfg); err != nil {
			return cfg, fmt.Errorf("decode config %d: %w", btoi(k), err)
		}
		if cfg.Type == typ && cfg.Name == name {
			return cfg, nil
		}
	}
	return Config{}, fmt.Errorf("%s config %q: %w", typ, name, ErrNotFound)
}

// Config returns one config version by id.
func (t *Tx) Config(id uint64) (Config, error) {
	var c Config
	if err := t.get(bucketConfigs, itob(id), &c); err != nil {
		return c, fmt.Errorf("config %d: %w", id, err)
	}
	return c, nil
}

// Configs lists config versions of a type ("" for all), oldest first; with
// latestOnly only the newest version of each (type, name).
func (t *Tx) Configs(typ string, latestOnly bool) ([]Config, error) {
	all, err := list[Config](t, bucketConfigs, "")
	if err != nil {
		return nil, err
	}
	var out []Config
	newest := map[string]int{}
	for _, c := range all {
		if typ != "" && c.Type != typ {
			continue
		}
		if latestOnly {
			if i, ok := newest[c.Type+"/"+c.Name]; ok {
				out[i] = c
				continue
			}
			newest[c.Type+"/"+c.Name] = len(out)
		}
		out = append(out, c)
	}
	return out, nil
}
