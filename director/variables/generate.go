// Package variables generates the values of a manifest's `variables:`
// entries as BOSH's config server and CredHub do, honouring every option of
// their generators, and shapes them as BOSH does:
//
//	password     a string
//	certificate  {ca, certificate, private_key}
//	rsa          {private_key, public_key}
//	ssh          {private_key, public_key, public_key_fingerprint}
//
// Generation is pure apart from randomness: a certificate signed by another
// variable is handed that CA's value by the caller. Digest fingerprints a
// declaration's type and options, so that a caller can tell when
// `update_mode: converge` asks for a new value.
package variables

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Types the director generates.
const (
	Password    = "password"
	Certificate = "certificate"
	RSA         = "rsa"
	SSH         = "ssh"
)

// Defaults, as BOSH's director and CredHub use them.
const (
	DefaultPasswordLength = 20
	DefaultKeyLength      = 2048
	DefaultDurationDays   = 365
)

// KeyLengths are the RSA key sizes the generators accept.
var KeyLengths = []int{2048, 3072, 4096}

// ExtKeyUsages maps extended_key_usage names to x509's.
var ExtKeyUsages = map[string]x509.ExtKeyUsage{
	"server_auth":      x509.ExtKeyUsageServerAuth,
	"client_auth":      x509.ExtKeyUsageClientAuth,
	"code_signing":     x509.ExtKeyUsageCodeSigning,
	"email_protection": x509.ExtKeyUsageEmailProtection,
	"timestamping":     x509.ExtKeyUsageTimeStamping,
}

// KeyUsages maps key_usage names to x509's.
var KeyUsages = map[string]x509.KeyUsage{
	"digital_signature": x509.KeyUsageDigitalSignature,
	"non_repudiation":   x509.KeyUsageContentCommitment,
	"key_encipherment":  x509.KeyUsageKeyEncipherment,
	"data_encipherment": x509.KeyUsageDataEncipherment,
	"key_agreement":     x509.KeyUsageKeyAgreement,
	"key_cert_sign":     x509.KeyUsageCertSign,
	"crl_sign":          x509.KeyUsageCRLSign,
	"encipher_only":     x509.KeyUsageEncipherOnly,
	"decipher_only":     x509.KeyUsageDecipherOnly,
}

// Spec is one declared variable.
type Spec struct {
	Name    string
	Type    string
	Options map[string]any
}

// Digest fingerprints the type and options (not the name): equal specs
// give equal digests whatever the order of their options.
func (s Spec) Digest() string {
	opts := s.Options
	if opts == nil {
		opts = map[string]any{}
	}
	b, _ := json.Marshal(struct { // encoding/json sorts map keys
		Type    string         `json:"type"`
		Options map[string]any `json:"options"`
	}{s.Type, opts})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// CA returns the signing CA's value (a certificate variable's
// {ca, certificate, private_key}) for its name.
type CA func(name string) (map[string]any, error)

// Generate makes a new value for spec. ca is called only for a certificate
// whose options name a ca.
func Generate(spec Spec, ca CA) (any, error) {
	if err := Check(spec); err != nil {
		return nil, err
	}
	switch spec.Type {
	case Password:
		return password(spec.Options)
	case Certificate:
		return certificate(spec, ca)
	case RSA:
		return rsaKey(spec.Options)
	case SSH:
		return sshKey(spec.Options)
	default:
		return nil, fmt.Errorf("the director cannot generate variables of type %q (password, certificate, rsa, ssh)", spec.Type)
	}
}

// Check refuses options that make no sense, naming the option. The
// manifest parser reports the same problems with file and line; Check
// guards values that reach the generator by other roads.
func Check(spec Spec) error {
	o := spec.Options
	switch spec.Type {
	case Password:
		if n, ok := intOpt(o, "length"); ok && (n < 1 || n > 1024) {
			return fmt.Errorf("options.length: %d is not between 1 and 1024", n)
		}
		if len(passwordClasses(o)) == 0 {
			return errors.New("options: every character class is excluded")
		}
	case Certificate:
		isCA, _ := o["is_ca"].(bool)
		selfSign, _ := o["self_sign"].(bool)
		caName, _ := o["ca"].(string)
		if !isCA && !selfSign && caName == "" {
			return errors.New("options: a certificate needs a ca to sign it (ca: NAME), or is_ca: true, or self_sign: true")
		}
		if selfSign && caName != "" {
			return errors.New("options: self_sign and ca exclude each other")
		}
		if cn, _ := o["common_name"].(string); cn == "" && len(strs(o["alternative_names"])) == 0 && !isCA {
			return errors.New("options: a certificate needs a common_name or alternative_names")
		}
		for _, u := range strs(o["extended_key_usage"]) {
			if _, ok := ExtKeyUsages[u]; !ok {
				return fmt.Errorf("options.extended_key_usage: unknown usage %q", u)
			}
		}
		for _, u := range strs(o["key_usage"]) {
			if _, ok := KeyUsages[u]; !ok {
				return fmt.Errorf("options.key_usage: unknown usage %q", u)
			}
		}
		if n, ok := intOpt(o, "duration"); ok && (n < 1 || n > 36500) {
			return fmt.Errorf("options.duration: %d days is not between 1 and 36500", n)
		}
		fallthrough
	case RSA, SSH:
		if n, ok := intOpt(o, "key_length"); ok && !validKeyLength(n) {
			return fmt.Errorf("options.key_length: %d is not one of 2048, 3072, 4096", n)
		}
	}
	return nil
}

func validKeyLength(n int) bool {
	for _, k := range KeyLengths {
		if n == k {
			return true
		}
	}
	return false
}

func intOpt(o map[string]any, k string) (int, bool) {
	switch n := o[k].(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case uint64:
		return int(n), true
	case float64:
		return int(n), true
	}
	return 0, false
}

func strs(v any) []string {
	var out []string
	switch l := v.(type) {
	case []any:
		for _, x := range l {
			out = append(out, fmt.Sprint(x))
		}
	case []string:
		out = l
	}
	return out
}

const (
	lower   = "abcdefghijklmnopqrstuvwxyz"
	upper   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits  = "0123456789"
	special = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
)

// passwordClasses are the character classes the options leave in:
// lower, upper and digits unless excluded, special only with
// include_special (CredHub's), and never with exclude_special (BOSH's).
func passwordClasses(o map[string]any) []string {
	on := func(k string) bool { b, _ := o[k].(bool); return b }
	var cs []string
	if !on("exclude_lower") {
		cs = append(cs, lower)
	}
	if !on("exclude_upper") {
		cs = append(cs, upper)
	}
	if !on("exclude_number") {
		cs = append(cs, digits)
	}
	if on("include_special") && !on("exclude_special") {
		cs = append(cs, special)
	}
	return cs
}

// password draws length characters from the classes left in, with at
// least one of each class when the length allows.
func password(o map[string]any) (string, error) {
	n, ok := intOpt(o, "length")
	if !ok {
		n = DefaultPasswordLength
	}
	classes := passwordClasses(o)
	for {
		b := make([]byte, n)
		all := strings.Join(classes, "")
		for i := range b {
			c, err := pick(all)
			if err != nil {
				return "", err
			}
			b[i] = c
		}
		s := string(b)
		if n < len(classes) || everyClass(s, classes) {
			return s, nil
		}
	}
}

func everyClass(s string, classes []string) bool {
	for _, c := range classes {
		if !strings.ContainsAny(s, c) {
			return false
		}
	}
	return true
}

func pick(alphabet string) (byte, error) {
	k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
	if err != nil {
		return 0, fmt.Errorf("random: %w", err)
	}
	return alphabet[k.Int64()], nil
}

func newKey(o map[string]any) (*rsa.PrivateKey, error) {
	n, ok := intOpt(o, "key_length")
	if !ok {
		n = DefaultKeyLength
	}
	key, err := rsa.GenerateKey(rand.Reader, n)
	if err != nil {
		return nil, fmt.Errorf("generate %d-bit rsa key: %w", n, err)
	}
	return key, nil
}

func privatePEM(key *rsa.PrivateKey) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

// rsaKey is {private_key, public_key}: PKCS #1 and PKIX PEM.
func rsaKey(o map[string]any) (any, error) {
	key, err := newKey(o)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"private_key": privatePEM(key),
		"public_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}, nil
}

// sshKey is {private_key, public_key, public_key_fingerprint}: the private
// key as PKCS #1 PEM, the public key in authorized_keys form, and its MD5
// fingerprint as colon-separated hex, as BOSH shapes them.
func sshKey(o map[string]any) (any, error) {
	key, err := newKey(o)
	if err != nil {
		return nil, err
	}
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"private_key":            privatePEM(key),
		"public_key":             strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))),
		"public_key_fingerprint": ssh.FingerprintLegacyMD5(pub),
	}, nil
}

// clockSkew backdates NotBefore for machines whose clocks run behind.
const clockSkew = 5 * time.Minute

// certificate makes a CA (is_ca), a self-signed certificate (self_sign) or
// a certificate signed by the CA variable its ca option names.
func certificate(spec Spec, caOf CA) (any, error) {
	o := spec.Options
	str := func(k string) string { s, _ := o[k].(string); return s }
	isCA, _ := o["is_ca"].(bool)
	cn := str("common_name")
	alts := strs(o["alternative_names"])
	if cn == "" && isCA {
		cn = spec.Name
	}
	days, ok := intOpt(o, "duration")
	if !ok {
		days = DefaultDurationDays
	}
	key, err := newKey(o)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	ski := sha256.Sum256(pub)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject(o, cn),
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(time.Duration(days) * 24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		SubjectKeyId:          ski[:20],
	}
	for _, a := range alts {
		if ip := net.ParseIP(a); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, a)
		}
	}
	names := strs(o["extended_key_usage"])
	sort.Strings(names)
	for _, u := range names {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, ExtKeyUsages[u])
	}
	for _, u := range strs(o["key_usage"]) {
		tmpl.KeyUsage |= KeyUsages[u]
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}

	parent, signer, caPEM := tmpl, any(key), ""
	if caName := str("ca"); caName != "" {
		if caOf == nil {
			return nil, fmt.Errorf("options.ca: no certificate authority %s", caName)
		}
		caVal, err := caOf(caName)
		if err != nil {
			return nil, fmt.Errorf("options.ca: %w", err)
		}
		caCert, caKey, err := loadCA(caVal)
		if err != nil {
			return nil, fmt.Errorf("options.ca: %s: %w", caName, err)
		}
		parent, signer = caCert, caKey
		tmpl.AuthorityKeyId = caCert.SubjectKeyId
		caPEM, _ = caVal["certificate"].(string)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	if caPEM == "" {
		caPEM = certPEM
	}
	return map[string]any{"ca": caPEM, "certificate": certPEM, "private_key": privatePEM(key)}, nil
}

func subject(o map[string]any, cn string) pkix.Name {
	n := pkix.Name{CommonName: cn}
	add := func(dst *[]string, k string) {
		if s, _ := o[k].(string); s != "" {
			*dst = append(*dst, s)
		}
	}
	add(&n.Organization, "organization")
	add(&n.OrganizationalUnit, "organization_unit")
	add(&n.Country, "country")
	add(&n.Province, "state")
	add(&n.Locality, "locality")
	return n
}

// loadCA parses a certificate variable's value as a signing CA.
func loadCA(v map[string]any) (*x509.Certificate, any, error) {
	certPEM, _ := v["certificate"].(string)
	keyPEM, _ := v["private_key"].(string)
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		return nil, nil, errors.New("no certificate")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !cert.IsCA {
		return nil, nil, errors.New("not a certificate authority (is_ca: true)")
	}
	kb, _ := pem.Decode([]byte(keyPEM))
	if kb == nil {
		return nil, nil, errors.New("no private key")
	}
	var key any
	switch kb.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("private key: %w", err)
	}
	return cert, key, nil
}

// SignedBy is the CA certificate PEM a certificate value carries (its
// "ca"), to tell whether the CA was regenerated since.
func SignedBy(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["ca"].(string)
	return s
}
