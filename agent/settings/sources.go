package settings

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// maxUserData bounds what the agent reads from any source.
const maxUserData = 1 << 20

// DefaultMetadataURL is the link-local metadata address shared by AWS, Azure
// and OpenStack.
const DefaultMetadataURL = "http://169.254.169.254"

// File reads the settings from a file (the local CPI writes it).
type File struct {
	Path string
}

func (f File) String() string { return "file " + f.Path }

// Fetch reads the file.
func (f File) Fetch(context.Context) ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("read settings file: %w", err)
	}
	return b, nil
}

// retry calls fetch until it succeeds, ctx ends or attempts run out, waiting
// a doubling delay between tries: metadata services answer late at boot.
func retry(ctx context.Context, attempts int, first time.Duration, fetch func() ([]byte, error)) ([]byte, error) {
	if attempts <= 0 {
		attempts = 1
	}
	delay := first
	var err error
	for i := 0; i < attempts; i++ {
		var b []byte
		if b, err = fetch(); err == nil {
			return b, nil
		}
		var perm permanent
		if errors.As(err, &perm) || i == attempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < 10*time.Second {
			delay *= 2
		}
	}
	return nil, err
}

// permanent marks an error that retrying will not fix (a 404).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

func get(ctx context.Context, client *http.Client, method, url string, header map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, permanent{err}
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxUserData+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	if len(b) > maxUserData {
		return nil, permanent{fmt.Errorf("%s %s: answer larger than %d bytes", method, url, maxUserData)}
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("%s %s: %s", method, url, resp.Status)
		if resp.StatusCode == http.StatusNotFound {
			return nil, permanent{err}
		}
		return nil, err
	}
	return b, nil
}

// AWS reads EC2 instance user data through IMDSv2: a session token from
// PUT /latest/api/token, then GET /latest/user-data with it.
type AWS struct {
	// BaseURL is the metadata endpoint (DefaultMetadataURL when empty).
	BaseURL string
	Client  *http.Client
	// Attempts and Backoff bound retries (default 6 and 1s).
	Attempts int
	Backoff  time.Duration
}

func (a AWS) String() string { return "aws instance user data" }

// Fetch returns the user data.
func (a AWS) Fetch(ctx context.Context) ([]byte, error) {
	base := strings.TrimRight(orDefault(a.BaseURL, DefaultMetadataURL), "/")
	return retry(ctx, orAttempts(a.Attempts), orBackoff(a.Backoff), func() ([]byte, error) {
		token, err := get(ctx, a.Client, http.MethodPut, base+"/latest/api/token",
			map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "300"})
		if err != nil {
			return nil, fmt.Errorf("imds token: %w", err)
		}
		auth := map[string]string{"X-aws-ec2-metadata-token": strings.TrimSpace(string(token))}
		b, err := get(ctx, a.Client, http.MethodGet, base+"/latest/user-data", auth)
		if err != nil {
			return nil, fmt.Errorf("imds user data: %w", err)
		}
		// The instance id exists only after RunInstances, so the CPI cannot
		// put it in the user data: take it from the metadata service.
		if !hasVMCID(b) {
			id, err := get(ctx, a.Client, http.MethodGet, base+"/latest/meta-data/instance-id", auth)
			if err != nil {
				return nil, fmt.Errorf("imds instance id: %w", err)
			}
			if b, err = withVMCID(b, strings.TrimSpace(string(id))); err != nil {
				return nil, permanent{fmt.Errorf("imds user data: %w", err)}
			}
		}
		return b, nil
	})
}

// hasVMCID reports whether a settings document names its VM.
func hasVMCID(doc []byte) bool {
	var s struct {
		VM struct {
			CID string `json:"cid"`
		} `json:"vm"`
	}
	return json.Unmarshal(doc, &s) == nil && s.VM.CID != ""
}

// withVMCID sets "vm": {"cid": cid} in a settings document, keeping every
// other key as it is.
func withVMCID(doc []byte, cid string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("not a JSON settings document: %w", err)
	}
	vm := map[string]json.RawMessage{}
	if raw, ok := m["vm"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &vm); err != nil {
			return nil, fmt.Errorf("field vm: %w", err)
		}
	}
	c, _ := json.Marshal(cid)
	vm["cid"] = c
	v, _ := json.Marshal(vm)
	m["vm"] = v
	return json.Marshal(m)
}

// AzureAPIVersion is the IMDS API version the Azure source asks for.
const AzureAPIVersion = "2021-01-01"

// Azure reads the VM's user data from the Azure Instance Metadata Service
// (GET /metadata/instance/compute/userData, header Metadata: true), which
// answers it base64-encoded.
type Azure struct {
	BaseURL  string
	Client   *http.Client
	Attempts int
	Backoff  time.Duration
}

func (a Azure) String() string { return "azure imds user data" }

// Fetch returns the decoded user data.
func (a Azure) Fetch(ctx context.Context) ([]byte, error) {
	base := strings.TrimRight(orDefault(a.BaseURL, DefaultMetadataURL), "/")
	url := base + "/metadata/instance/compute/userData?api-version=" + AzureAPIVersion + "&format=text"
	b, err := retry(ctx, orAttempts(a.Attempts), orBackoff(a.Backoff), func() ([]byte, error) {
		return get(ctx, a.Client, http.MethodGet, url, map[string]string{"Metadata": "true"})
	})
	if err != nil {
		return nil, fmt.Errorf("azure user data: %w", err)
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("azure user data: not base64: %w", err)
	}
	return dec, nil
}

// OpenStackMetadata reads user data from the OpenStack metadata service
// (GET /openstack/latest/user_data).
type OpenStackMetadata struct {
	BaseURL  string
	Client   *http.Client
	Attempts int
	Backoff  time.Duration
}

func (o OpenStackMetadata) String() string { return "openstack metadata service" }

// Fetch returns the user data.
func (o OpenStackMetadata) Fetch(ctx context.Context) ([]byte, error) {
	base := strings.TrimRight(orDefault(o.BaseURL, DefaultMetadataURL), "/")
	b, err := retry(ctx, orAttempts(o.Attempts), orBackoff(o.Backoff), func() ([]byte, error) {
		b, err := get(ctx, o.Client, http.MethodGet, base+"/openstack/latest/user_data", nil)
		if err != nil || hasVMCID(b) {
			return b, err
		}
		md, err := get(ctx, o.Client, http.MethodGet, base+"/openstack/latest/meta_data.json", nil)
		if err != nil {
			return nil, fmt.Errorf("openstack meta_data.json: %w", err)
		}
		return withServerUUID(b, md)
	})
	if err != nil {
		return nil, fmt.Errorf("openstack user data: %w", err)
	}
	return b, nil
}

// withServerUUID sets vm.cid from meta_data.json's uuid: the server id
// exists only once Nova has the server, so the CPI cannot put it in the
// user data.
func withServerUUID(userData, metaData []byte) ([]byte, error) {
	var md struct {
		UUID string `json:"uuid"`
	}
	if err := json.Unmarshal(metaData, &md); err != nil || md.UUID == "" {
		return nil, permanent{fmt.Errorf("openstack meta_data.json has no uuid")}
	}
	b, err := withVMCID(userData, md.UUID)
	if err != nil {
		return nil, permanent{fmt.Errorf("openstack user data: %w", err)}
	}
	return b, nil
}

// ConfigDriveLabel is the file system label of an OpenStack config drive.
const ConfigDriveLabel = "config-2"

// OpenStackConfigDrive reads openstack/latest/user_data from a config drive.
// Dir is where the drive's file system is (already) mounted; when Dir is
// empty the drive is found by its label and mounted read-only in a
// temporary directory for the read (needs root).
type OpenStackConfigDrive struct {
	Dir string
}

func (o OpenStackConfigDrive) String() string { return "openstack config drive" }

// Fetch returns the user data.
func (o OpenStackConfigDrive) Fetch(ctx context.Context) ([]byte, error) {
	dir := o.Dir
	if dir == "" {
		mnt, unmount, err := mountConfigDrive(ctx)
		if err != nil {
			return nil, err
		}
		defer unmount()
		dir = mnt
	}
	b, err := os.ReadFile(filepath.Join(dir, "openstack", "latest", "user_data"))
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	if hasVMCID(b) {
		return b, nil
	}
	md, err := os.ReadFile(filepath.Join(dir, "openstack", "latest", "meta_data.json"))
	if err != nil {
		return nil, fmt.Errorf("config drive: %w", err)
	}
	return withServerUUID(b, md)
}

func mountConfigDrive(ctx context.Context) (string, func(), error) {
	dev := "/dev/disk/by-label/" + ConfigDriveLabel
	if _, err := os.Stat(dev); err != nil {
		return "", nil, fmt.Errorf("config drive: no device labelled %s: %w", ConfigDriveLabel, err)
	}
	mnt, err := os.MkdirTemp("", "config-drive-")
	if err != nil {
		return "", nil, fmt.Errorf("config drive: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		os.Remove(mnt)
		return "", nil, fmt.Errorf("config drive: mount %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return mnt, func() {
		_ = exec.Command("umount", mnt).Run()
		os.Remove(mnt)
	}, nil
}

// FirstOf tries each source in order and returns the first document found.
type FirstOf []Source

func (f FirstOf) String() string {
	var names []string
	for _, s := range f {
		names = append(names, s.String())
	}
	return strings.Join(names, " or ")
}

// Fetch returns the first source's document that can be read.
func (f FirstOf) Fetch(ctx context.Context) ([]byte, error) {
	var errs []error
	for _, s := range f {
		b, err := s.Fetch(ctx)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func orAttempts(n int) int {
	if n <= 0 {
		return 6
	}
	return n
}

func orBackoff(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Second
	}
	return d
}
