package deploy

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// IdentityValidity is how long an agent's own bus certificate is valid.
const IdentityValidity = pki.CertValidity

// issueIdentity gives the agent of VM vmCID its long-lived bus identity: it
// asks the agent for a certificate request of a key the agent makes and
// keeps (request_identity), signs it for that agent id only, records the
// serial as pending (the bus admits it and the one before), hands the
// certificate over (update_settings: the agent reconnects with it), and
// records it as the agent's: from then on the bus refuses the certificate
// it had (its bootstrap one, or the one rotated out).
func (d *Deployer) issueIdentity(ctx context.Context, vmCID, agentID string) (*x509.Certificate, error) {
	ag := d.agent(agentID)
	req, err := ag.RequestIdentity(ctx)
	if err != nil {
		return nil, fmt.Errorf("identity of agent %s: %w", agentID, err)
	}
	cert, certPEM, err := d.c.CA.SignCSR([]byte(req.CSR), agentID, IdentityValidity)
	if err != nil {
		return nil, fmt.Errorf("identity of agent %s: %w", agentID, err)
	}
	serial := cert.SerialNumber.Text(16)
	setVM := func(f func(*store.VM)) error {
		return d.c.Store.Update(func(tx *store.Tx) error {
			vm, err := tx.VM(vmCID)
			if err != nil {
				return err
			}
			f(&vm)
			return tx.PutVM(vm)
		})
	}
	if err := setVM(func(vm *store.VM) { vm.PendingSerial = serial }); err != nil {
		return nil, err
	}
	if err := ag.UpdateSettings(ctx, protocol.UpdateSettingsRequest{Mbus: &protocol.MbusCredentials{Cert: string(certPEM)}}); err != nil {
		setVM(func(vm *store.VM) { vm.PendingSerial = "" })
		return nil, fmt.Errorf("identity of agent %s: %w", agentID, err)
	}
	if err := setVM(func(vm *store.VM) { vm.CertSerial, vm.PendingSerial = serial, "" }); err != nil {
		return nil, err
	}
	return cert, nil
}

// RotateAgentCerts gives every agent of deployment (every deployment's
// when empty) a new identity (issueIdentity): a new key made on its VM, a
// new certificate, the old one refused by the bus from then on. An agent
// that does not answer keeps its identity and is reported; the others go
// on. The result counts them.
func (d *Deployer) RotateAgentCerts(ctx context.Context, r *task.Reporter, deployment string) (string, error) {
	var vms []store.VM
	err := d.c.Store.View(func(tx *store.Tx) error {
		all, err := tx.VMs(deployment)
		for _, vm := range all {
			if vm.AgentID != "" && vm.State != vmCreating && vm.State != vmDeleting {
				vms = append(vms, vm)
			}
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if deployment != "" && len(vms) == 0 {
		if err := d.c.Store.View(func(tx *store.Tx) error { _, err := tx.Deployment(deployment); return err }); err != nil {
			return "", task.BadInput(err)
		}
	}
	stage := r.Stage("Rotating agent certificates", len(vms))
	var failed []string
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, vm := range vms {
		g.Go(func() error {
			name := vm.AgentID
			if vm.InstanceID != "" {
				name = vm.Deployment + "/" + vm.InstanceID
			}
			err := stage.Run(name, func() error {
				// An agent gets a quarter of the wait for a new VM's agent
				// (30 s by default) to answer.
				cctx, cancel := context.WithTimeout(gctx, d.c.AgentTimeout/4)
				defer cancel()
				_, err := d.issueIdentity(cctx, vm.CID, vm.AgentID)
				return err
			})
			if err != nil {
				mu.Lock()
				failed = append(failed, name)
				mu.Unlock()
			}
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return "", err
	}
	slices.Sort(failed)
	res := fmt.Sprintf("Rotated the certificates of %d of %d agents.", len(vms)-len(failed), len(vms))
	if len(failed) > 0 {
		return "", fmt.Errorf("%s Not rotated (they keep their certificate; run again when they answer): %s", res, strings.Join(failed, ", "))
	}
	return res, nil
}
