package deploy

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/manifest/interpolate"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/store"
)

// variables resolves a manifest's director variables from the store,
// generating those the manifest declares (password, certificate, rsa, ssh)
// on first use. Values are sealed in the store and never logged or
// reported; names are kept per deployment ("/<deployment>/<name>") unless
// they start with "/".
type variables struct {
	st         *store.Store
	deployment string
	declared   map[string]declaredVar
	persist    bool // false for a dry run: generate in memory only

	mu        sync.Mutex
	generated map[string]any
}

type declaredVar struct {
	Name    string         `yaml:"name"`
	Type    string         `yaml:"type"`
	Options map[string]any `yaml:"options"`
}

var _ interpolate.Source = (*variables)(nil)

func newVariables(st *store.Store, deployment string, raw []byte, persist bool) (*variables, error) {
	var doc struct {
		Variables []declaredVar `yaml:"variables"`
	}
	// Errors in the rest of the document are the manifest parser's to
	// report; only the variables block matters here.
	_ = yaml.Unmarshal(raw, &doc)
	v := &variables{st: st, deployment: deployment, declared: map[string]declaredVar{}, persist: persist, generated: map[string]any{}}
	for _, dv := range doc.Variables {
		v.declared[dv.Name] = dv
	}
	return v, nil
}

func (v *variables) key(name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	return "/" + v.deployment + "/" + name
}

// Get returns a stored variable, else generates a declared one.
func (v *variables) Get(ctx context.Context, name string) (any, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.get(name, 0)
}

func (v *variables) get(name string, depth int) (any, bool, error) {
	if depth > 4 {
		return nil, false, fmt.Errorf("variable %s: certificate authorities nest too deep", name)
	}
	if val, ok := v.generated[name]; ok {
		return val, true, nil
	}
	key := v.key(name)
	var rec store.Variable
	err := v.st.View(func(tx *store.Tx) error {
		var err error
		rec, err = tx.Variable(key)
		return err
	})
	if err == nil {
		var val any
		if err := json.Unmarshal(rec.Value, &val); err != nil {
			return nil, false, fmt.Errorf("variable %s: %w", name, err)
		}
		return val, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	dv, ok := v.declared[name]
	if !ok {
		return nil, false, nil
	}
	val, err := v.generate(dv, depth)
	if err != nil {
		return nil, false, fmt.Errorf("generate variable %s (%s): %w", name, dv.Type, err)
	}
	if v.persist {
		raw, err := json.Marshal(val)
		if err != nil {
			return nil, false, err
		}
		if err := v.st.Update(func(tx *store.Tx) error {
			return tx.PutVariable(store.Variable{Name: key, Type: dv.Type, Value: raw})
		}); err != nil {
			return nil, false, err
		}
	}
	v.generated[name] = val
	return val, true, nil
}

func (v *variables) generate(dv declaredVar, depth int) (any, error) {
	switch dv.Type {
	case "password":
		return password(20)
	case "certificate":
		return v.certificate(dv, depth)
	case "rsa":
		return rsaKey()
	case "ssh":
		return sshKey()
	default:
		return nil, fmt.Errorf("the director cannot generate variables of type %q (password, certificate, rsa, ssh)", dv.Type)
	}
}

// rsaBits is the size of generated rsa and ssh keys (BOSH's).
const rsaBits = 2048

// rsaKey generates an rsa variable: {private_key, public_key}, the private
// key as PKCS #1 PEM ("RSA PRIVATE KEY") and the public key as PKIX PEM
// ("PUBLIC KEY"), as BOSH's config server shapes it.
func rsaKey() (any, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		"public_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}, nil
}

// sshKey generates an ssh variable: {private_key, public_key,
// public_key_fingerprint}: the private key as PKCS #1 PEM, the public key
// in authorized_keys form ("ssh-rsa AAAA..."), and its MD5 fingerprint as
// colon-separated hex, as BOSH's config server shapes it.
func sshKey() (any, error) {
	key, err := rsa.GenerateKey(rand.Reader, rsaBits)
	if err != nil {
		return nil, err
	}
	wire := sshRSAPublicKey(&key.PublicKey)
	sum := md5.Sum(wire)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02x", b)
	}
	return map[string]any{
		"private_key":            string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})),
		"public_key":             "ssh-rsa " + base64.StdEncoding.EncodeToString(wire),
		"public_key_fingerprint": strings.Join(hexes, ":"),
	}, nil
}

// sshRSAPublicKey is an rsa public key in the SSH wire format (RFC 4253,
// section 6.6): the string "ssh-rsa", then e and n as mpints.
func sshRSAPublicKey(k *rsa.PublicKey) []byte {
	var b []byte
	str := func(s []byte) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	mpint := func(n *big.Int) {
		raw := n.Bytes()
		if len(raw) > 0 && raw[0]&0x80 != 0 {
			raw = append([]byte{0}, raw...) // positive: no sign bit set
		}
		str(raw)
	}
	str([]byte("ssh-rsa"))
	mpint(big.NewInt(int64(k.E)))
	mpint(k.N)
	return b
}

const passwordAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func password(n int) (string, error) {
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(passwordAlphabet))))
		if err != nil {
			return "", err
		}
		b[i] = passwordAlphabet[k.Int64()]
	}
	return string(b), nil
}

// certificate generates a CA (is_ca) or a certificate signed by the CA
// variable its "ca" option names, for common_name and alternative_names.
func (v *variables) certificate(dv declaredVar, depth int) (any, error) {
	str := func(k string) string { s, _ := dv.Options[k].(string); return s }
	cn := str("common_name")
	if cn == "" {
		cn = dv.Name
	}
	if isCA, _ := dv.Options["is_ca"].(bool); isCA {
		ca, err := pki.NewCA(cn, 0)
		if err != nil {
			return nil, err
		}
		key, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		return map[string]any{"ca": string(ca.CertPEM()), "certificate": string(ca.CertPEM()), "private_key": string(key)}, nil
	}
	caName := str("ca")
	if caName == "" {
		return nil, errors.New("options.ca: a certificate that is not a CA names its CA variable")
	}
	caVal, ok, err := v.get(caName, depth+1)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("options.ca: variable %s is neither stored nor declared", caName)
	}
	m, _ := caVal.(map[string]any)
	certPEM, _ := m["certificate"].(string)
	keyPEM, _ := m["private_key"].(string)
	ca, err := pki.LoadCA([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("ca %s: %w", caName, err)
	}
	hosts := []string{cn}
	if alts, ok := dv.Options["alternative_names"].([]any); ok {
		for _, a := range alts {
			if s, ok := a.(string); ok && s != cn {
				hosts = append(hosts, s)
			}
		}
	}
	kp, err := ca.IssueServer(hosts, 0)
	if err != nil {
		return nil, err
	}
	return map[string]any{"ca": certPEM, "certificate": string(kp.CertPEM), "private_key": string(kp.KeyPEM)}, nil
}
