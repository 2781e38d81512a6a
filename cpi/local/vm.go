package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

// The files of a VM directory, <data_dir>/vms/<cid>/.
const (
	vmRecordFile = "vm.json"       // vmRecord
	settingsFile = "settings.json" // the agent's settings
	pidFile      = "agent.pid"     // the agent's pid, for operators
	agentLogFile = "agent.log"     // the agent's stdout and stderr
	metadataFile = "metadata.json" // SetVMMetadata
	rootDirName  = "root"          // the VM's /var/vcap
)

// vmRecord is what the local CPI knows about a VM, in vm.json.
type vmRecord struct {
	CID             string                 `json:"cid"`
	AgentID         string                 `json:"agent_id"`
	StemcellCID     string                 `json:"stemcell_cid"`
	CloudProperties vmCloudProperties      `json:"cloud_properties"`
	Networks        map[string]cpi.Network `json:"networks"`
	// Isolated is true when the agent runs in its own mount namespace with
	// root/ at /var/vcap.
	Isolated  bool             `json:"isolated"`
	BaseDir   string           `json:"base_dir"`
	Agent     proctree.Process `json:"agent"`
	CreatedAt time.Time        `json:"created_at"`
	// Tags are the create request's tags, by which ListVMs finds the VM.
	Tags map[string]string `json:"tags,omitempty"`
}

// vmCloudProperties are the cloud properties a local VM accepts. They are
// recorded, not enforced: a local VM shares the machine's CPUs, memory and
// disk.
type vmCloudProperties struct {
	CPU               int64 `json:"cpu,omitempty"`
	RAM               int64 `json:"ram,omitempty"`
	EphemeralDiskSize int64 `json:"ephemeral_disk_size,omitempty"`
}

func parseVMCloudProperties(raw json.RawMessage) (vmCloudProperties, error) {
	var p vmCloudProperties
	fields, err := objectFields(raw)
	if err != nil {
		return p, err
	}
	for k, v := range fields {
		var dst *int64
		switch k {
		case "cpu":
			dst = &p.CPU
		case "ram":
			dst = &p.RAM
		case "ephemeral_disk_size":
			dst = &p.EphemeralDiskSize
		default:
			return p, cpi.InvalidCloudProperty(k, "unknown vm cloud property (the local cpi knows cpu, ram, ephemeral_disk_size)")
		}
		if err := json.Unmarshal(v, dst); err != nil || *dst < 0 {
			return p, cpi.InvalidCloudProperty(k, "must be a non-negative integer, not %s", v)
		}
	}
	return p, nil
}

func (c *CPI) vmDir(cid string) string { return c.path(kindVM, cid) }

// readVM returns the VM's record, or cpi.ErrVMNotFound.
func (c *CPI) readVM(cid string) (vmRecord, error) {
	var rec vmRecord
	if !validCID(kindVM, cid) {
		return rec, fmt.Errorf("vm %q: %w", cid, cpi.ErrVMNotFound)
	}
	if err := readJSON(filepath.Join(c.vmDir(cid), vmRecordFile), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return rec, fmt.Errorf("vm %s: %w", cid, cpi.ErrVMNotFound)
		}
		return rec, fmt.Errorf("vm %s: %w", cid, err)
	}
	return rec, nil
}

// CreateVM makes the VM's directory, claims its addresses, writes the
// agent's settings and starts the agent.
func (c *CPI) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	if !validCID(kindStemcell, req.StemcellCID) {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: stemcell %q: %w", req.StemcellCID, cpi.ErrStemcellNotFound)
	}
	agentPath := filepath.Join(c.path(kindStemcell, req.StemcellCID), agentFile)
	if _, err := os.Stat(agentPath); err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: stemcell %s: %w", req.StemcellCID, cpi.ErrStemcellNotFound)
	}
	props, err := parseVMCloudProperties(req.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	settings, err := objectFields(req.AgentSettings)
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: agent settings must be a JSON object")
	}
	for k, v := range c.agentDefaults {
		if _, ok := settings[k]; !ok {
			settings[k] = v
		}
	}

	cid := newCID(kindVM)
	dir := c.vmDir(cid)
	rec := vmRecord{
		CID:             cid,
		AgentID:         req.AgentID,
		StemcellCID:     req.StemcellCID,
		CloudProperties: props,
		Isolated:        c.isolate,
		BaseDir:         filepath.Join(dir, rootDirName),
		CreatedAt:       time.Now().UTC(),
		Tags:            req.Tags,
	}
	if c.isolate {
		rec.BaseDir = proctree.VcapDir
	}

	// Claim the addresses and make the VM visible in one step under the
	// lock, so concurrent calls (of this or another plugin process) never
	// hand out the same address.
	unlock, err := c.lock(ctx)
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: %w", err)
	}
	err = func() error {
		taken, err := c.takenAddresses()
		if err != nil {
			return err
		}
		if rec.Networks, err = c.configureNetworks(req.Networks, taken); err != nil {
			return err
		}
		settings["networks"], _ = json.Marshal(rec.Networks)
		settings["vm"], _ = json.Marshal(map[string]string{"cid": cid})
		stage, err := c.stage(cid)
		if err != nil {
			return err
		}
		defer os.RemoveAll(stage)
		if err := os.Mkdir(filepath.Join(stage, rootDirName), 0o755); err != nil {
			return err
		}
		// The settings carry the agent's private key.
		if err := writeJSON(filepath.Join(stage, settingsFile), settings, 0o600); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(stage, metadataFile), map[string]string{}, 0o644); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(stage, vmRecordFile), rec, 0o644); err != nil {
			return err
		}
		return os.Rename(stage, dir)
	}()
	unlock()
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: %w", err)
	}

	proc, err := c.startAgent(agentPath, dir, filepath.Join(dir, rootDirName), c.isolate)
	if err == nil {
		rec.Agent = proc
		err = c.saveAgent(rec)
	}
	if err != nil {
		_ = proctree.Stop(context.WithoutCancel(ctx), proc, filepath.Join(dir, rootDirName), c.stopTimeout)
		_ = c.removeVM(context.WithoutCancel(ctx), cid)
		return cpi.CreateVMResult{}, &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: fmt.Sprintf("create vm: start agent: %v", err)}
	}
	c.logger.InfoContext(ctx, "created vm", "vm", cid, "agent_id", req.AgentID, "pid", proc.PID, "isolated", c.isolate)
	return cpi.CreateVMResult{CID: cid, Networks: rec.Networks}, nil
}

// startAgent starts the VM's agent detached in its own session, with stdout
// and stderr appended to the VM's agent.log. With isolate, the agent gets its
// own mount namespace, in which every mount is private (nothing propagates to
// or from the host) and rootDir is bind-mounted at /var/vcap.
func (c *CPI) startAgent(agentPath, vmDir, rootDir string, isolate bool) (proctree.Process, error) {
	base := rootDir
	if isolate {
		base = proctree.VcapDir
	}
	return proctree.Start(proctree.Spec{
		Path: agentPath,
		Args: []string{
			"--infrastructure", "local",
			"--settings-file", filepath.Join(vmDir, settingsFile),
			"--base-dir", base,
		},
		Log:     filepath.Join(vmDir, agentLogFile),
		Root:    rootDir,
		Isolate: isolate,
	})
}

// saveAgent records a newly started agent in vm.json and agent.pid.
func (c *CPI) saveAgent(rec vmRecord) error {
	dir := c.vmDir(rec.CID)
	if err := writeJSON(filepath.Join(dir, vmRecordFile), rec, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(rec.Agent.PID)+"\n"), 0o644)
}

// DeleteVM stops every process of the VM (SIGTERM, then SIGKILL), detaches
// its disks and removes its directory. Deleting a missing VM succeeds.
func (c *CPI) DeleteVM(ctx context.Context, cid string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	rec, err := c.readVM(cid)
	if errors.Is(err, cpi.ErrVMNotFound) {
		if validCID(kindVM, cid) {
			// A directory without a record is debris of a failed create.
			if _, serr := os.Stat(c.vmDir(cid)); serr == nil {
				return c.removeVM(ctx, cid)
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete vm: %w", err)
	}
	agent := rec.Agent
	if agent.PID == 0 {
		// The plugin died between starting the agent and recording it:
		// the agent is found by the settings file only this VM's has.
		agent = unrecordedAgent(filepath.Join(c.vmDir(cid), settingsFile))
	}
	if err := proctree.Stop(ctx, agent, filepath.Join(c.vmDir(cid), rootDirName), c.stopTimeout); err != nil {
		return fmt.Errorf("delete vm %s: stop: %w", cid, err)
	}
	if err := c.removeVM(ctx, cid); err != nil {
		return err
	}
	c.logger.InfoContext(ctx, "deleted vm", "vm", cid)
	return nil
}

// removeVM unmounts whatever is mounted under the VM's directory, detaches
// its disks and removes the directory, freeing its addresses. Once the
// directory is out of sight no RebootVM can start the agent again; an agent
// one started just before is stopped here.
func (c *CPI) removeVM(ctx context.Context, cid string) error {
	dir := c.vmDir(cid)
	if err := proctree.UnmountUnder(dir); err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	err = c.detachAll(cid)
	var gone string
	if err == nil {
		gone, err = c.hide(dir)
	}
	unlock()
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	if gone == "" {
		return nil
	}
	var rec vmRecord
	if readJSON(filepath.Join(gone, vmRecordFile), &rec) == nil {
		if err := proctree.Stop(ctx, rec.Agent, filepath.Join(gone, rootDirName), c.stopTimeout); err != nil {
			return fmt.Errorf("delete vm %s: stop: %w", cid, err)
		}
	}
	if err := proctree.UnmountUnder(gone); err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("delete vm %s: remove files: %w", cid, err)
	}
	return nil
}

// HasVM reports whether the VM's directory exists. A VM whose agent died
// still exists: it is a failed VM, which the director recreates or deletes.
func (c *CPI) HasVM(ctx context.Context, cid string) (bool, error) {
	if !validCID(kindVM, cid) {
		return false, nil
	}
	_, err := os.Stat(filepath.Join(c.vmDir(cid), vmRecordFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("has vm %s: %w", cid, err)
	}
	return true, nil
}

// RebootVM stops every process of the VM and starts its agent again with
// the same settings (including the disks attached since).
func (c *CPI) RebootVM(ctx context.Context, cid string) error {
	rec, err := c.readVM(cid)
	if err != nil {
		return fmt.Errorf("reboot vm: %w", err)
	}
	dir := c.vmDir(cid)
	rootDir := filepath.Join(dir, rootDirName)
	if err := proctree.Stop(ctx, rec.Agent, rootDir, c.stopTimeout); err != nil {
		return fmt.Errorf("reboot vm %s: stop: %w", cid, err)
	}
	if !rec.Isolated {
		if err := proctree.UnmountUnder(dir); err != nil {
			return fmt.Errorf("reboot vm %s: %w", cid, err)
		}
	}
	// Start under the lock, so that a concurrent DeleteVM either removes
	// the VM first or finds the new agent in its record.
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("reboot vm %s: %w", cid, err)
	}
	defer unlock()
	if _, err := c.readVM(cid); err != nil {
		return fmt.Errorf("reboot vm: %w", err)
	}
	agentPath := filepath.Join(c.path(kindStemcell, rec.StemcellCID), agentFile)
	proc, err := c.startAgent(agentPath, dir, rootDir, rec.Isolated)
	if err != nil {
		return fmt.Errorf("reboot vm %s: start agent: %w", cid, err)
	}
	rec.Agent = proc
	if err := c.saveAgent(rec); err != nil {
		return fmt.Errorf("reboot vm %s: %w", cid, err)
	}
	c.logger.InfoContext(ctx, "rebooted vm", "vm", cid, "pid", proc.PID)
	return nil
}

// SetVMMetadata replaces the VM's metadata (metadata.json).
func (c *CPI) SetVMMetadata(ctx context.Context, cid string, metadata map[string]string) error {
	if _, err := c.readVM(cid); err != nil {
		return fmt.Errorf("set vm metadata: %w", err)
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	if err := writeJSON(filepath.Join(c.vmDir(cid), metadataFile), metadata, 0o644); err != nil {
		return fmt.Errorf("set vm metadata of %s: %w", cid, err)
	}
	return nil
}

// CalculateVMCloudProperties echoes the resources as the cloud properties
// {"cpu", "ram", "ephemeral_disk_size"}, which CreateVM accepts and records.
// Local VMs share the machine, so any size fits.
func (c *CPI) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (json.RawMessage, error) {
	return json.Marshal(vmCloudProperties{CPU: int64(req.CPU), RAM: req.RAMMB, EphemeralDiskSize: req.EphemeralDiskSize})
}

// unrecordedAgent finds the agent started with --settings-file settings
// (a path inside one VM's directory, so naming that VM alone); the zero
// Process when none runs.
func unrecordedAgent(settings string) proctree.Process {
	for _, st := range proctree.All() {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PID))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--settings-file" && args[i+1] == settings {
				return proctree.Process{PID: st.PID, StartTime: st.StartTime}
			}
		}
	}
	return proctree.Process{}
}
