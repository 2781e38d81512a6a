package app

import (
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/director/api"
)

// newRemote is what the logs and ssh routes reach agents and the blobstore
// with.
func newRemote(d *Director) *api.Remote {
	return &api.Remote{
		Agent: func(agentID string) api.InstanceAgent {
			return client.New(d.Conn, agentID, client.Options{Logger: d.Logger})
		},
		Blobs:   d.Blobs,
		Signer:  d.Signer,
		BlobURL: d.BlobURL,
	}
}
