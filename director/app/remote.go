package app

import (
	"time"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/director/api"
)

// agentAbsentGrace is how long logs and ssh ask again an agent that is
// not on the bus (reconnecting after a director restart).
const agentAbsentGrace = 15 * time.Second

// newRemote is what the logs and ssh routes reach agents and the blobstore
// with.
func newRemote(d *Director) api.Remote {
	return api.Remote{
		Agent: func(agentID string) api.InstanceAgent {
			return client.New(d.Conn, agentID, client.Options{Logger: d.Logger, AbsentGrace: agentAbsentGrace})
		},
		Blobs:   d.Blobs,
		Signer:  d.Signer,
		BlobURL: d.BlobURL,
	}
}
