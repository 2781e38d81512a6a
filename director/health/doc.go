// Package health watches the deployed instances through their agents'
// heartbeats and alerts and heals what it safely can.
//
// # Monitor
//
// A [Monitor] keeps, per instance that has a VM, the last heartbeat (job
// state, per-process states, vitals) and a status:
//
//	unknown       no heartbeat yet (a new VM, or the director just started)
//	running, starting, failing, stopped   the job state of the last heartbeat
//	late          a heartbeat is overdue (older than 1.5 heartbeat intervals)
//	unresponsive  silent for longer than the timeout (default 3 intervals,
//	              15 s), or gone from the bus (see below)
//
// The list of instances comes from an [Instances] source (the state file,
// re-read every check). Heartbeats arrive on hm.agent.heartbeat.<agent id>,
// alerts on hm.agent.alert.<agent id> (see [Monitor.Subscribe]); the agent id
// is taken from the subject, which the bus lets only that agent publish on.
//
// An agent whose heartbeat is overdue (more than 1.2 intervals old) is
// probed: the monitor sends it a ping every tenth of an interval. When the
// bus answers twice in a row that nobody listens on the agent's subject (the
// agent's connection is gone: its process died, its VM was deleted), the
// instance is unresponsive at once instead of at the end of the timeout. A
// ping that merely goes unanswered changes nothing: the timeout decides.
//
// While a task holds a deployment's lock (a deploy deletes and creates VMs
// on purpose), its instances are at worst late: they become unresponsive,
// with the event, only once the lock is free.
//
// Changes become audit events (see [Events]): "unresponsive", "recovered",
// "job-failing", "job-recovered", and every alert as "alert". The state is
// exported to the API ([Monitor.Deployment], for `director instances --ps`)
// and to Prometheus ([Monitor] is a prometheus.Collector).
//
// # Resurrector
//
// After each check the monitor hands every deployment's snapshot to its
// [Healer], normally a [Resurrector]. The resurrector recreates the VM of
// each unresponsive instance, with its persistent disks, through a
// [Recreator] (the deploy pipeline's recreate, run as a task that holds the
// deployment's lock), at most once per VM, never twice at the same time.
//
// Meltdown: when more than Threshold (default 50%) of a deployment's
// instances are down — unresponsive, late, or resurrected within the last
// Window — it resurrects nothing in that deployment and records one
// "meltdown" event, until the share falls back under the threshold. An
// unresponsive instance is resurrected only once every other instance of its
// deployment is accounted for — down, or heard from since — so that
// instances that died together, and are found a few seconds apart, are all
// counted first (this costs at most one heartbeat interval).
//
// Resurrection is on by default; switches in the state file turn it off per
// deployment or per instance group ([store.ResurrectionSwitch]).
package health
