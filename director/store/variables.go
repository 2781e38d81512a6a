package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
)

// Variable is a named secret (a generated password, certificate, key...).
// Value is whatever JSON its generator produced; it is sealed at rest.
type Variable struct {
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	Value     json.RawMessage `json:"value,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// Digest fingerprints the declaration (type and options) the value was
	// generated from, so that update_mode: converge can tell a change.
	Digest string `json:"-"`
}

// sealed is a Variable as stored: everything but the value in clear, so that
// names and types can be listed without the key.
type sealed struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	Nonce     []byte    `json:"nonce"`
	Sealed    []byte    `json:"sealed"`
	CreatedAt time.Time `json:"created_at"`
	Digest    string    `json:"digest,omitempty"`
}

func (t *Tx) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(t.key)
	if err != nil {
		return nil, fmt.Errorf("variables cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// PutVariable seals and stores a variable, replacing one of the same name.
func (t *Tx) PutVariable(v Variable) error {
	g, err := t.aead()
	if err != nil {
		return err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("variable nonce: %w", err)
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = t.now().UTC()
	}
	s := sealed{Name: v.Name, Type: v.Type, Nonce: nonce, CreatedAt: v.CreatedAt, Digest: v.Digest,
		Sealed: g.Seal(nil, nonce, v.Value, []byte(v.Name))}
	return t.put(bucketVariables, []byte(v.Name), s)
}

// Variable returns a variable with its value unsealed.
func (t *Tx) Variable(name string) (Variable, error) {
	var s sealed
	if err := t.get(bucketVariables, []byte(name), &s); err != nil {
		return Variable{}, fmt.Errorf("variable %s: %w", name, err)
	}
	g, err := t.aead()
	if err != nil {
		return Variable{}, err
	}
	plain, err := g.Open(nil, s.Nonce, s.Sealed, []byte(s.Name))
	if err != nil {
		return Variable{}, fmt.Errorf("variable %s: unseal: wrong key for this state file?: %w", name, err)
	}
	return Variable{Name: s.Name, Type: s.Type, Value: plain, CreatedAt: s.CreatedAt, Digest: s.Digest}, nil
}

// VariableNames lists variables without their values.
func (t *Tx) VariableNames() ([]Variable, error) {
	all, err := list[sealed](t, bucketVariables, "")
	out := make([]Variable, 0, len(all))
	for _, s := range all {
		out = append(out, Variable{Name: s.Name, Type: s.Type, CreatedAt: s.CreatedAt, Digest: s.Digest})
	}
	return out, err
}

// DeleteVariable removes a variable.
func (t *Tx) DeleteVariable(name string) error { return t.del(bucketVariables, []byte(name)) }
