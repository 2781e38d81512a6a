// Package apiv1 is the wire format of the director's API, version 1: the
// bodies that /v1/... routes take and answer, as their clients (the CLI,
// scripts, the tests) read and write them. It has no dependency on the
// director's store or its domain packages, so a client that imports it
// links neither: the CLI does not link bbolt or etcd.
//
// The records the director keeps (tasks, events, instances, ...) are served
// with exactly the JSON of the types here; director/api's tests check each
// stored record against its type here field by field, so the two cannot
// drift apart unnoticed. The request types are the API's own: the director's
// handlers and its deploy pipeline decode and take them as they are.
//
// Adding a field is compatible; renaming or removing one is a new version.
package apiv1
