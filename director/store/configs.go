package store

import (
	"crypto/rand"
	"fmt"
	"strconv"
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
	id, err := t.tx.nextSequence(path(bucketConfigs))
	if err != nil {
		return c, false, fmt.Errorf("next config id: %w", err)
	}
	c = Config{ID: id, Type: typ, Name: name, Content: content, CreatedAt: t.now().UTC()}
	sc, err := t.sealConfig(c)
	if err != nil {
		return c, false, err
	}
	return c, true, t.put(bucketConfigs, itob(id), sc)
}

// storedConfig is a Config as stored: a cpi config's content, which holds
// cloud credentials, sealed with the variables key like a variable's value,
// so that a backup without the key does not give them away. Other configs
// are stored in clear (their secrets are ((variables))).
type storedConfig struct {
	Config
	Nonce  []byte `json:"nonce,omitempty"`
	Sealed []byte `json:"sealed,omitempty"`
}

func (t *Tx) sealConfig(c Config) (storedConfig, error) {
	if c.Type != ConfigCPI {
		return storedConfig{Config: c}, nil
	}
	g, err := t.aead()
	if err != nil {
		return storedConfig{}, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return storedConfig{}, fmt.Errorf("config nonce: %w", err)
	}
	sealed := g.Seal(nil, nonce, []byte(c.Content), configAAD(c))
	c.Content = ""
	return storedConfig{Config: c, Nonce: nonce, Sealed: sealed}, nil
}

func (t *Tx) openConfig(sc storedConfig) (Config, error) {
	if sc.Sealed == nil {
		return sc.Config, nil // written before configs were sealed, or not a cpi config
	}
	g, err := t.aead()
	if err != nil {
		return Config{}, err
	}
	plain, err := g.Open(nil, sc.Nonce, sc.Sealed, configAAD(sc.Config))
	if err != nil {
		return Config{}, fmt.Errorf("config %d: unseal: wrong key for this state file?: %w", sc.ID, err)
	}
	c := sc.Config
	c.Content = string(plain)
	return c, nil
}

// configAAD binds sealed content to its record.
func configAAD(c Config) []byte {
	return []byte("config/" + strconv.FormatUint(c.ID, 10) + "/" + c.Type + "/" + c.Name)
}

// sealConfigs seals the cpi configs a state file holds in clear (written
// before configs were sealed).
func (t *Tx) sealConfigs() error {
	var clear []storedConfig
	err := t.tx.scan(path(bucketConfigs), nil, nil, false, func(k, v []byte) (bool, error) {
		var sc storedConfig
		if err := decode(v, &sc); err != nil {
			return false, fmt.Errorf("decode config %d: %w", btoi(k), err)
		}
		if sc.Type == ConfigCPI && sc.Sealed == nil {
			clear = append(clear, sc)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	for _, sc := range clear {
		sealed, err := t.sealConfig(sc.Config)
		if err != nil {
			return err
		}
		if err := t.put(bucketConfigs, itob(sc.ID), sealed); err != nil {
			return err
		}
	}
	return nil
}

// LatestConfig returns the newest version of a (type, name) config; name ""
// means "default".
func (t *Tx) LatestConfig(typ, name string) (Config, error) {
	if name == "" {
		name = "default"
	}
	var found *storedConfig
	err := t.tx.scan(path(bucketConfigs), nil, nil, true, func(k, v []byte) (bool, error) {
		var sc storedConfig
		if err := decode(v, &sc); err != nil {
			return false, fmt.Errorf("decode config %d: %w", btoi(k), err)
		}
		if sc.Type == typ && sc.Name == name {
			found = &sc
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return Config{}, err
	}
	if found != nil {
		return t.openConfig(*found)
	}
	return Config{}, fmt.Errorf("%s config %q: %w", typ, name, ErrNotFound)
}

// Config returns one config version by id.
func (t *Tx) Config(id uint64) (Config, error) {
	var sc storedConfig
	if err := t.get(bucketConfigs, itob(id), &sc); err != nil {
		return Config{}, fmt.Errorf("config %d: %w", id, err)
	}
	return t.openConfig(sc)
}

// Configs lists config versions of a type ("" for all), oldest first; with
// latestOnly only the newest version of each (type, name).
func (t *Tx) Configs(typ string, latestOnly bool) ([]Config, error) {
	all, err := list[storedConfig](t, bucketConfigs, "")
	if err != nil {
		return nil, err
	}
	var out []Config
	newest := map[string]int{}
	for _, sc := range all {
		if typ != "" && sc.Type != typ {
			continue
		}
		c, err := t.openConfig(sc)
		if err != nil {
			return nil, err
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
