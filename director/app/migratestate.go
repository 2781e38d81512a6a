package app

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/store"
)

var _ cli.StateMigrator = tools{}

// MigrateState copies the state between a bbolt file and an etcd prefix
// (director migrate-state) and verifies the copy (store.Copy).
func (tools) MigrateState(from, to cli.StateSide, key string, force bool) (int, int, error) {
	src, err := openSide(from, key, true)
	if err != nil {
		return 0, 0, fmt.Errorf("source: %w", err)
	}
	defer src.Close()
	dst, err := openSide(to, key, false)
	if err != nil {
		return 0, 0, fmt.Errorf("target: %w", err)
	}
	defer dst.Close()
	res, err := store.Copy(dst, src, force)
	if errors.Is(err, store.ErrNotEmpty) {
		return 0, 0, cli.Usage(err)
	}
	if err != nil {
		return 0, 0, err
	}
	return res.Records, res.Sequences, nil
}

func openSide(s cli.StateSide, key string, mustExist bool) (*store.Store, error) {
	if s.Backend == "etcd" {
		return store.OpenEtcd(store.EtcdOptions{Endpoints: s.Endpoints, Prefix: s.Prefix,
			CAFile: s.CAFile, CertFile: s.CertFile, KeyFile: s.KeyFile, MaxTxnOps: s.MaxTxnOps}, store.Options{KeyPath: key})
	}
	if mustExist {
		if _, err := os.Stat(s.Path); err != nil {
			return nil, cli.Usage(fmt.Errorf("--from: %w", err))
		}
	}
	return store.Open(s.Path, store.Options{KeyPath: key, Timeout: time.Second})
}
