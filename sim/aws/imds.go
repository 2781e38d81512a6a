package aws

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Instance is what an instance's metadata service tells it.
type Instance struct {
	ID               string
	ImageID          string
	InstanceType     string
	PrivateIP        string
	AvailabilityZone string
	Region           string
	// UserData is the instance's user data, decoded; nil when it has none.
	UserData []byte
}

// maxTokens bounds the live session tokens of one instance's IMDS.
const maxTokens = 1024

// IMDS is an instance's metadata service as EC2 serves it with IMDSv2
// required (HttpTokens: required, as cpi-aws creates instances):
//
//   - PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds
//     (1 to 21600) answers a session token; a missing or bad TTL is 400, and
//     a PUT carrying X-Forwarded-For is 403 (a proxied request);
//   - every GET needs a live token in X-aws-ec2-metadata-token, else 401;
//   - GET /latest/user-data (404 without user data), /latest/meta-data/
//     (a listing) and its instance-id, ami-id, instance-type, local-ipv4,
//     local-hostname, hostname, placement/availability-zone,
//     placement/region; /latest/dynamic/instance-identity/document.
type IMDS struct {
	mu     sync.Mutex
	inst   Instance
	tokens map[string]time.Time
	now    func() time.Time
}

// NewIMDS returns the metadata service of an instance.
func NewIMDS(inst Instance) *IMDS {
	return &IMDS{inst: inst, tokens: map[string]time.Time{}, now: time.Now}
}

// SetUserData replaces the user data (EC2 allows it while the instance is
// stopped).
func (m *IMDS) SetUserData(b []byte) {
	m.mu.Lock()
	m.inst.UserData = b
	m.mu.Unlock()
}

func (m *IMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/latest/api/token" {
		m.token(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if !m.valid(r.Header.Get("X-aws-ec2-metadata-token")) {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	m.mu.Lock()
	inst := m.inst
	m.mu.Unlock()
	hostname := "ip-" + strings.ReplaceAll(inst.PrivateIP, ".", "-") + ".ec2.internal"
	meta := map[string]string{
		"ami-id":                      inst.ImageID,
		"hostname":                    hostname,
		"instance-id":                 inst.ID,
		"instance-type":               inst.InstanceType,
		"local-hostname":              hostname,
		"local-ipv4":                  inst.PrivateIP,
		"placement/availability-zone": inst.AvailabilityZone,
		"placement/region":            inst.Region,
	}
	switch {
	case path == "/latest/user-data":
		if inst.UserData == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(inst.UserData)
	case path == "/latest/meta-data" || path == "/latest/meta-data/":
		text(w, "ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/")
	case path == "/latest/meta-data/placement" || path == "/latest/meta-data/placement/":
		text(w, "availability-zone\nregion")
	case strings.HasPrefix(path, "/latest/meta-data/"):
		v, ok := meta[strings.TrimPrefix(path, "/latest/meta-data/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		text(w, v)
	case path == "/latest/dynamic/instance-identity/document":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"instanceId": inst.ID, "imageId": inst.ImageID, "instanceType": inst.InstanceType,
			"privateIp": inst.PrivateIP, "availabilityZone": inst.AvailabilityZone, "region": inst.Region,
			"architecture": "x86_64", "version": "2017-09-30",
		})
	default:
		http.NotFound(w, r)
	}
}

func text(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(s))
}

// token answers PUT /latest/api/token.
func (m *IMDS) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "", http.StatusBadRequest)
		return
	}
	var b [32]byte
	rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	m.mu.Lock()
	now := m.now()
	if len(m.tokens) >= maxTokens {
		for t, exp := range m.tokens {
			if !exp.After(now) {
				delete(m.tokens, t)
			}
		}
		if len(m.tokens) >= maxTokens {
			m.mu.Unlock()
			http.Error(w, "", http.StatusTooManyRequests)
			return
		}
	}
	m.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	m.mu.Unlock()
	w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", strconv.Itoa(ttl))
	text(w, tok)
}

func (m *IMDS) valid(tok string) bool {
	if tok == "" {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	exp, ok := m.tokens[tok]
	return ok && exp.After(m.now())
}
