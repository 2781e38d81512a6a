// Package store owns the director's state: one bbolt database (the default)
// or a key prefix of an etcd cluster ([OpenEtcd], docs/ha.md) that holds
// everything the director knows, and the only package that imports bbolt or
// the etcd client. The typed transactions below sit on a small key-value
// layer (kvTx, kv.go) with a bbolt and an etcd implementation; both hold the
// same schema, the same JSON records and the same sealed values.
//
// # Using it
//
// Open the file once per process with [Open]; a second process opening the same
// file waits for Options.Timeout and then fails with [ErrLocked]. Read with
// [Store.View] and write with [Store.Update]; both hand the callback a [Tx] with
// typed methods per record (Tx.PutRelease, Tx.Instances, Tx.AcquireLock, ...).
// A transaction must stay short: never call a CPI, an agent or the network
// inside one. Read what you need, let the transaction end, act, then record the
// result in a new transaction.
//
// Tests of any package get a fresh store on a real file, checked for
// consistency when the test ends, from director/store/storetest.
//
// # Schema (version 1)
//
// Every record is a JSON document. Top-level buckets and their keys:
//
//	meta              "schema_version" -> decimal schema version ("1")
//	releases          "<name>/<version>"            -> Release
//	packages          "<fingerprint>"               -> PackageBlob (de-duplication index)
//	jobs              "<fingerprint>"               -> PackageBlob (de-duplication index)
//	stemcells         "<name>/<version>"            -> Stemcell (cids per CPI)
//	configs           <id: 8-byte big-endian>       -> Config (every version of every type)
//	deployments       "<name>"                      -> Deployment (its links sealed with the variables key)
//	manifests         "<deployment>" (bucket) / <id: 8-byte big-endian> -> Manifest
//	instances         "<deployment>/<group>/<id>"   -> Instance
//	vms               "<cid>"                       -> VM
//	disks             "<cid>"                       -> Disk (orphaned ones too)
//	ip_reservations   "<network>/<ip>"              -> IPReservation
//	compiled_packages "<cache key>"                 -> CompiledPackage
//	tasks             <id: 8-byte big-endian>       -> Task
//	task_events       <task id: 8 bytes> (bucket) / <seq: 8 bytes> -> Event
//	variables         "<name>"                      -> sealed Variable (AES-256-GCM)
//	locks             "<name>"                      -> Lock (a lease)
//	audit_events      <id: 8-byte big-endian>       -> AuditEvent (append-only; created on first write)
//	resurrection      "<deployment>[/<group>]"      -> ResurrectionSwitch (created on first write)
//
// Buckets marked "created on first write" may be absent from a version 1
// file; their readers treat a missing bucket as empty.
//
// Sequence numbers (config, manifest, task, event and audit event ids) come
// from the bucket sequence of the bucket that holds them, so they only grow.
//
// Variables are sealed with AES-256-GCM under a 32-byte key kept beside the
// state file (Options.KeyPath, by default "<state file>.key", mode 0600). The
// key never enters the state file, so a backup of the state alone does not
// reveal a secret; keep the key with the backup.
//
// # Versions and upgrades
//
// The schema version lives in meta. [Open] creates a new file at
// [SchemaVersion], upgrades an older one step by step inside one write
// transaction (see migrations), and refuses a newer one with [ErrSchemaTooNew]
// so that an old director never damages a newer state file.
package store
