package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/store"
)

// agentStates asks agents for their state over the director's bus
// connection (instances --ps).
type agentStates struct{ conn *nats.Conn }

var _ api.Agents = agentStates{}

func (a agentStates) State(ctx context.Context, agentID string) (json.RawMessage, error) {
	st, err := client.New(a.conn, agentID, client.Options{RequestTimeout: 5 * time.Second}).GetState(ctx)
	if err != nil {
		return nil, err
	}
	st.Spec = nil // large and not for listings
	return json.Marshal(st)
}

// admitAgent is the bus's admission of an agent's certificate, from the
// VM records: an agent whose VM is not recorded (deleted) is refused; a
// bootstrap certificate only until the agent has its identity; its own
// certificate only with the recorded serial (or the one being handed over
// by a rotation). A VM recorded without a serial has an agent made before
// identities were recorded: its certificate is admitted, until a rotation
// records one.
func admitAgent(st *store.Store, logger *slog.Logger) func(agentID string, cert *x509.Certificate) bool {
	return func(agentID string, cert *x509.Certificate) bool {
		serial := cert.SerialNumber.Text(16)
		ok := false
		err := st.View(func(tx *store.Tx) error {
			vms, err := tx.VMs("")
			for _, vm := range vms {
				if vm.AgentID != agentID {
					continue
				}
				switch {
				case pki.IsBootstrap(cert):
					ok = vm.CertSerial == ""
				default:
					ok = vm.CertSerial == "" || vm.CertSerial == serial || vm.PendingSerial == serial
				}
				return nil
			}
			return err
		})
		if err != nil {
			logger.Error("bus admission: read the VM records", "agent", agentID, "error", err)
			return false
		}
		return ok
	}
}
