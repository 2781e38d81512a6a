package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
)

// VM record states. A record is written before each CPI call that creates
// or deletes a VM (the intent) and rewritten after it (the result), so that
// the next task on the deployment can finish what an interrupted one left
// (see reconcile).
const (
	vmCreating = "creating" // CreateVM called; cid unknown: the record's cid is intentCID(agent id)
	vmCreated  = "created"
	vmDeleting = "deleting" // DeleteVM called
)

// compileInstance marks a compile VM's record (it belongs to no instance).
const compileInstance = "compilation"

// intentCID names the record of a VM being created, before its cid is
// known: the agent id identifies it (the VM's agent answers on its
// subject once it runs).
func intentCID(agentID string) string { return "intent-" + agentID }

// vmSpec is a VM to create.
type vmSpec struct {
	cpiName     string
	deployment  string
	instanceID  string // compileInstance for compile VMs
	stemcellCID string
	cloudProps  map[string]any
	env         map[string]any
	networks    []plan.Network
	disks       map[string]cpi.DiskHint // persistent disks it will attach
	metadata    map[string]string
}

// blobCA is what agents trust for blob URLs.
func (d *Deployer) blobCA() string {
	if len(d.c.BlobCA) > 0 {
		return string(d.c.BlobCA)
	}
	return string(d.c.CA.CertPEM())
}

// tags are the creation tags of a VM or disk (cpi.TagDirector and the
// rest): ListVMs and ListDisks find the director's objects by them, and
// reconcile checks them before it deletes anything.
func (d *Deployer) tags(deployment, group, instanceID, agentID string) map[string]string {
	t := map[string]string{cpi.TagDirector: d.c.DirectorID, cpi.TagDeployment: deployment, cpi.TagInstanceID: instanceID, cpi.TagAgentID: agentID}
	switch {
	case group != "":
		t[cpi.TagInstanceGroup] = group
	case instanceID == compileInstance:
		t[cpi.TagInstanceGroup] = "compilation"
	}
	return t
}

// listed finds, through the CPI's ListVMs, the VM of this director whose
// agent is agentID. ok is false when the CPI cannot list VMs (then nothing
// is known); found is false when it can and no such VM exists.
func (d *Deployer) listed(ctx context.Context, cpiName, agentID string) (vm cpi.VMInfo, found, ok bool, err error) {
	vms, ok, err := d.listVMs(ctx, cpiName)
	if err != nil || !ok {
		return cpi.VMInfo{}, false, false, err
	}
	for _, v := range vms {
		if v.AgentID == agentID || v.Tags[cpi.TagAgentID] == agentID {
			return v, true, true, nil
		}
	}
	return cpi.VMInfo{}, false, true, nil
}

// listVMs lists this director's VMs in a CPI, in one call. ok is false
// when the CPI cannot list VMs.
func (d *Deployer) listVMs(ctx context.Context, cpiName string) (vms []cpi.VMInfo, ok bool, err error) {
	info, err := d.c.CPIs.Info(ctx, cpiName)
	if err != nil || !info.Capabilities.ListVMs {
		return nil, false, err
	}
	c, err := d.cpi(ctx, cpiName)
	if err != nil {
		return nil, false, err
	}
	vms, err = c.ListVMs(ctx, cpi.ListFilter{DirectorID: d.c.DirectorID})
	if err != nil {
		return nil, false, fmt.Errorf("list vms of cpi %s: %w", cpiName, err)
	}
	return vms, true, nil
}

// createdVM is a VM the director made and whose agent answers.
type createdVM struct {
	CID     string
	AgentID string
}

func (d *Deployer) cpi(ctx context.Context, name string) (cpi.CPI, error) {
	c, err := d.c.CPIs.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cpi %s: %w", name, err)
	}
	return c, nil
}

// agent is the client of one agent.
// agent is a client of agentID. A request it sends while the agent is not
// on the bus is sent again for Config.AgentAbsentGrace: after a director
// restart agents take a few seconds to reconnect, and a deploy sent at once
// must not fail on them (found by make torture).
func (d *Deployer) agent(agentID string) *client.Client {
	return client.New(d.c.Conn, agentID, client.Options{Logger: d.c.Logger, AbsentGrace: d.c.AgentAbsentGrace})
}

func cpiNetworks(ns []plan.Network) (map[string]cpi.Network, error) {
	out := map[string]cpi.Network{}
	for _, n := range ns {
		cn := cpi.Network{Type: n.Type, Netmask: n.Netmask, Default: n.Default}
		if n.IP.IsValid() {
			cn.IP = n.IP.String()
		}
		if n.Gateway.IsValid() {
			cn.Gateway = n.Gateway.String()
		}
		for _, a := range n.DNS {
			cn.DNS = append(cn.DNS, a.String())
		}
		if len(n.CloudProperties) > 0 {
			raw, err := json.Marshal(n.CloudProperties)
			if err != nil {
				return nil, err
			}
			cn.CloudProperties = raw
		}
		out[n.Name] = cn
	}
	return out, nil
}

// createVM creates a VM with a fresh agent id and bus certificate, records
// it, sets its metadata and waits for its agent. On failure nothing is left
// behind, except when ctx ended during CreateVM: the intent record stays
// for the next task to resolve.
func (d *Deployer) createVM(ctx context.Context, s vmSpec) (createdVM, error) {
	agentID := newID()
	// User data carries a bootstrap certificate only: the agent's
	// long-lived identity is signed for a key it makes (issueIdentity).
	kp, err := d.c.CA.IssueBootstrap(agentID)
	if err != nil {
		return createdVM{}, err
	}
	caPEM := string(d.c.CA.CertPEM())
	set := settings.Settings{
		AgentID:   agentID,
		Mbus:      settings.Mbus{URL: d.c.BusURL, URLs: d.c.BusURLs, CACert: caPEM, Cert: string(kp.CertPEM), Key: string(kp.KeyPEM)},
		Blobstore: settings.Blobstore{CACert: d.blobCA()},
		Disks:     settings.Disks{Persistent: s.disks},
	}
	if len(s.env) > 0 {
		if set.Env, err = json.Marshal(s.env); err != nil {
			return createdVM{}, err
		}
	}
	rawSettings, err := json.Marshal(set)
	if err != nil {
		return createdVM{}, err
	}
	nets, err := cpiNetworks(s.networks)
	if err != nil {
		return createdVM{}, err
	}
	props := s.cloudProps
	if props == nil {
		props = map[string]any{}
	}
	rawProps, err := json.Marshal(props)
	if err != nil {
		return createdVM{}, err
	}
	req := cpi.CreateVMRequest{AgentID: agentID, StemcellCID: s.stemcellCID, CloudProperties: rawProps, Networks: nets, AgentSettings: rawSettings,
		Tags: d.tags(s.deployment, s.metadata["instance_group"], s.instanceID, agentID)}
	for cid := range s.disks {
		req.DiskCIDs = append(req.DiskCIDs, cid)
	}
	if len(s.env) > 0 {
		if req.Env, err = json.Marshal(s.env); err != nil {
			return createdVM{}, err
		}
	}
	c, err := d.cpi(ctx, s.cpiName)
	if err != nil {
		return createdVM{}, err
	}

	intent := store.VM{CID: intentCID(agentID), CPI: s.cpiName, AgentID: agentID, Deployment: s.deployment, InstanceID: s.instanceID, Stemcell: s.stemcellCID, State: vmCreating}
	// Intent and result records are batched: with VMs created in parallel
	// they share commits (each still durable before the call it guards).
	if err := d.c.Store.Batch(func(tx *store.Tx) error { return tx.PutVM(intent) }); err != nil {
		return createdVM{}, err
	}
	res, err := c.CreateVM(ctx, req)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, cpi.ErrOutcomeUnknown) {
			// The CPI said no: nothing was created. (When the plugin died
			// during the call or the task was cancelled, the VM may exist:
			// the intent stays for reconcile.)
			d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteVM(intent.CID) })
		}
		return createdVM{}, fmt.Errorf("create vm: %w", err)
	}
	vm := createdVM{CID: res.CID, AgentID: agentID}
	rec := intent
	rec.CID, rec.State = res.CID, vmCreated
	if err := d.c.Store.Batch(func(tx *store.Tx) error {
		if err := tx.DeleteVM(intent.CID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.PutVM(rec)
	}); err != nil {
		return vm, err
	}
	md := map[string]string{"director": d.c.Name, "deployment": s.deployment, "created_at": time.Now().UTC().Format(time.RFC3339)}
	for k, v := range s.metadata {
		md[k] = v
	}
	if err := c.SetVMMetadata(ctx, res.CID, md); err != nil && !errors.Is(err, cpi.ErrNotImplemented) {
		d.deleteVM(ctx, s.cpiName, vm)
		return createdVM{}, fmt.Errorf("set metadata of vm %s: %w", res.CID, err)
	}
	wctx, cancel := context.WithTimeout(ctx, d.c.AgentTimeout)
	defer cancel()
	if err := d.agent(agentID).WaitReady(wctx, 250*time.Millisecond); err != nil {
		d.deleteVM(ctx, s.cpiName, vm)
		return createdVM{}, fmt.Errorf("vm %s: %w", res.CID, err)
	}
	if _, err := d.issueIdentity(wctx, res.CID, agentID); err != nil {
		d.deleteVM(ctx, s.cpiName, vm)
		return createdVM{}, fmt.Errorf("vm %s: %w", res.CID, err)
	}
	return vm, nil
}

// recordedCPI is the CPI recorded with a VM, or fallback when the VM has
// no record (or none names its CPI).
func (d *Deployer) recordedCPI(vmCID, fallback string) string {
	name := fallback
	if vmCID == "" {
		return name
	}
	d.c.Store.View(func(tx *store.Tx) error {
		if rec, err := tx.VM(vmCID); err == nil && rec.CPI != "" {
			name = rec.CPI
		}
		return nil
	})
	return name
}

// deleteVM deletes a VM and its record, recording the intent first. The VM
// is deleted in the CPI recorded with it (cpiName when there is no record). It
// runs to the end even when ctx is cancelled (a half-deleted VM is worse
// than a late cancel), within a minute.
func (d *Deployer) deleteVM(ctx context.Context, cpiName string, vm createdVM) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := d.c.Store.Update(func(tx *store.Tx) error {
		rec, err := tx.VM(vm.CID)
		if errors.Is(err, store.ErrNotFound) {
			rec = store.VM{CID: vm.CID, CPI: cpiName, AgentID: vm.AgentID}
		} else if err != nil {
			return err
		}
		if rec.CPI != "" {
			cpiName = rec.CPI
		}
		rec.State = vmDeleting
		return tx.PutVM(rec)
	})
	if err != nil {
		return err
	}
	if err := d.deleteTaggedVM(ctx, cpiName, vm.CID, vm.AgentID); err != nil {
		return err
	}
	return d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteVM(vm.CID) })
}

// deleteTaggedVM deletes VM cid of a CPI once its creation tags show it is
// this director's VM for agentID (cpimanager.Manager.CheckVM): a VM tagged for
// another director or agent is refused, whatever the records say.
func (d *Deployer) deleteTaggedVM(ctx context.Context, cpiName, cid, agentID string) error {
	c, err := d.cpi(ctx, cpiName)
	if err != nil {
		return err
	}
	if err := d.c.CPIs.CheckVM(ctx, cpiName, cid, d.c.DirectorID, agentID); err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	if err := c.DeleteVM(ctx, cid); err != nil && !errors.Is(err, cpi.ErrVMNotFound) {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	return nil
}

// agentVM asks an agent which VM it runs on; ok is false when it does not
// answer within wait.
func (d *Deployer) agentVM(ctx context.Context, agentID string, wait time.Duration) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	a := d.agent(agentID)
	if err := a.WaitReady(ctx, 250*time.Millisecond); err != nil {
		return "", false
	}
	st, err := a.GetState(ctx)
	if err != nil || st.VMCID == "" {
		return "", false
	}
	return st.VMCID, true
}

// scriptErr turns failed scripts of a run_script result into an error.
func scriptErr(name string, res protocol.RunScriptResult) error {
	var errs []error
	for _, job := range sortedKeys(res.Jobs) {
		r := res.Jobs[job]
		if r.ExitCode != 0 || r.Error != "" {
			msg := fmt.Sprintf("%s of job %s exited %d", name, job, r.ExitCode)
			if r.Error != "" {
				msg += ": " + r.Error
			}
			errs = append(errs, errors.New(msg))
		}
	}
	return errors.Join(errs...)
}

// deleteTaggedDisk deletes persistent disk cid of a CPI once its creation
// tags show it is this director's (cpimanager.CheckDisk).
func (d *Deployer) deleteTaggedDisk(ctx context.Context, cpiName, cid string) error {
	c, err := d.cpi(ctx, cpiName)
	if err != nil {
		return err
	}
	info, err := d.c.CPIs.Info(ctx, cpiName)
	if err != nil {
		return err
	}
	if _, err := cpimanager.CheckDisk(ctx, c, info, cid, d.c.DirectorID); err != nil {
		return fmt.Errorf("delete disk %s: %w", cid, err)
	}
	if err := c.DeleteDisk(ctx, cid); err != nil && !errors.Is(err, cpi.ErrDiskNotFound) {
		return fmt.Errorf("delete disk %s: %w", cid, err)
	}
	return nil
}
