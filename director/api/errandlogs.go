package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/blobstore"
)

// ErrandLogsStage is the stage of the run-errand events whose data.logs is
// a LogsResult: the logs of an errand instance, fetched before its VM was
// deleted (run-errand --download-logs downloads them).
const ErrandLogsStage = "Errand logs"

// FetchLogs has an agent upload its instance's job logs (jobs: all when
// empty) into blobs as the logs route does, checks the archive, and
// returns its blob id and what the agent reported; GET /v1/logs/{blob}
// serves it once.
func FetchLogs(ctx context.Context, agent InstanceAgent, blobs blobstore.Store, signer *blobstore.Signer, blobURL string, jobs []string) (string, protocol.FetchLogsResult, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchLogsLimit)
	defer cancel()
	blobID, err := newLogsBlobID()
	if err != nil {
		return "", protocol.FetchLogsResult{}, err
	}
	put, err := signer.URL(blobURL, http.MethodPut, blobID, logsBlobTTL, "")
	if err != nil {
		return "", protocol.FetchLogsResult{}, err
	}
	got, err := agent.FetchLogs(ctx, protocol.FetchLogsRequest{Jobs: jobs, Upload: protocol.Upload{URL: put}})
	if err == nil {
		err = checkBlob(ctx, blobs, blobID, got)
	}
	if err != nil {
		blobs.Delete(context.WithoutCancel(ctx), blobID)
		return "", got, fmt.Errorf("fetch logs: %w", err)
	}
	return blobID, got, nil
}
