package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/blobstore"
)

// A compile result is recorded only when the blob the director stored has
// the digest the agent reported: an agent cannot make the director record
// a digest for other bytes (and so poison the compiled-package cache).
func TestCompiledBlobIsVerifiedAgainstTheReportedDigest(t *testing.T) {
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := "compiled package"
	if _, err := blobs.PutID(ctx, "compiled-app-1", strings.NewReader(data), ""); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(data))
	d := &Deployer{c: Config{Blobs: blobs}}
	if err := d.verifyBlob(ctx, "compiled-app-1", hex.EncodeToString(sum[:])); err != nil {
		t.Errorf("true digest: %v", err)
	}
	for _, lie := range []string{"", strings.Repeat("0", 64)} {
		if err := d.verifyBlob(ctx, "compiled-app-1", lie); !errors.Is(err, blobstore.ErrDigestMismatch) {
			t.Errorf("reported %q: %v, want ErrDigestMismatch", lie, err)
		}
	}
	if err := d.verifyBlob(ctx, "compiled-missing", hex.EncodeToString(sum[:])); err == nil {
		t.Error("a blob never uploaded verified")
	}
}
