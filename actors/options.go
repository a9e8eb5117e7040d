package actors

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/persistence"
)

// Options configure a System. The zero value works, but declares no kinds.
type Options struct {
	// Kinds declare the tree: one Kind per level (path pattern). Open
	// validates them and returns an error wrapping ErrInvalidTree when they
	// do not form a tree.
	Kinds []Kind

	// Durability says what an acknowledged message survives; a reply is
	// released only once its commit is durable at this level. The zero
	// value, PowerLoss, is the default.
	Durability Durability

	// MaxBatch bounds the number of messages one part commits together
	// (group commit): zero means DefaultMaxBatch, 1 turns group commit
	// off (one transaction per message).
	MaxBatch int

	// MaxMailbox bounds the messages waiting in one part's mailbox: a
	// Request or Send to a part that has that many gets an error wrapping
	// ErrBackpressure instead of growing the process without bound (a
	// message sent by a handler to such a part is dropped and logged).
	// Zero means DefaultMaxMailbox.
	MaxMailbox int

	// MaxActiveParts caps the number of active parts: beyond it the
	// least recently used idle leaves are passivated. Zero means a default
	// derived from the process's file-descriptor limit, since an open part
	// holds three descriptors (its file, its log, its shared memory):
	// (soft RLIMIT_NOFILE - 256) × 0.9 / 3, at least 16. Negative means no
	// cap. An activation that puts the system over the cap asks for a pass
	// at once (at most one per 10 ms), which passivates down to 95% of it.
	MaxActiveParts int

	// MaxBatchDelay bounds how long a part keeps a batch open while more
	// messages keep arriving: zero means DefaultMaxBatchDelay. A batch
	// also commits as soon as the part's mailbox holds no more messages,
	// so this bound only matters under sustained load.
	MaxBatchDelay time.Duration

	// Logger receives the runtime's logs, protoactor-go's included. Nil
	// discards them.
	Logger *slog.Logger

	// Delivery configures durable messages (Context.SendDurable,
	// Context.Call): retries, dead letters, inbox retention.
	Delivery Delivery

	// Fence, when not nil, is asked before every commit of a part and
	// again before the commit's replies and messages are released: an
	// error rolls the batch back (or, after the commit, turns its replies
	// into that error and sends nothing). A cluster uses it so that a node
	// whose ownership of a subtree has lapsed cannot acknowledge writes
	// for it. The first call runs on the part's goroutine; the second on
	// the goroutine that learns that the commit is durable (the durability
	// barrier's with PowerLoss, the part's otherwise), so Fence must be safe
	// for concurrent use. It must be fast.
	Fence func(Path) error

	// Committed, when not nil, is called on a part's goroutine after each
	// of its batches that wrote has committed, before the batch's replies
	// and messages are released (and before the durability barrier's sync):
	// the place to capture a batch's changes, for example to copy them to
	// other nodes (the new frames of the part's log, Commit.File + "-wal").
	// An error turns the batch's replies into that error and sends nothing,
	// although the commit stays in the part's file. It must be fast.
	Committed func(Commit) error

	// Remote, when not nil, serves the paths this System does not own:
	// every message (Request, Send, a handler's sends) whose target
	// Remote.Local rejects is handed to Remote.Request instead of being
	// delivered here. Nil: every path is local.
	Remote Remote

	// Clock, when not nil, replaces the wall clock for everything the
	// runtime times: batch bounds, Context.After, alarms, delivery retries,
	// restart backoff and passivation. Nil: the wall clock. Tests pass a
	// fake one (actortest.NewClock) and advance it instead of sleeping.
	Clock Clock

	// Registerer, when not nil, receives the system's Prometheus metrics
	// (see "Metrics" in the package documentation): Open registers them
	// and Close unregisters them, so one registry serves one open System
	// at a time. Nil: no metrics, nothing registered anywhere.
	Registerer prometheus.Registerer
}

// A Commit describes a batch a part has just committed (see
// Options.Committed).
type Commit struct {
	Path     Path   // the part
	File     string // its database file; its log is File + "-wal"
	Messages int    // messages handled in the batch
}

// A Remote carries messages to the parts that another node serves (see
// Options.Remote). Its methods are called from many goroutines at once.
type Remote interface {
	// Local reports whether this node serves p.
	Local(p Path) bool

	// Request carries msg to p's node and returns the reply of p's
	// handler, or an error. It must return when ctx is done. It should
	// carry CallPath(ctx) along, for the node serving the request to
	// make it with WithCallPath: a cycle of requests between nodes then
	// fails at once with ErrCallCycle instead of waiting out its deadline.
	Request(ctx context.Context, p Path, msg any) (any, error)
}

// Durability says what an acknowledged message survives.
type Durability int

const (
	// PowerLoss: an acknowledged message survives a power loss, at a cost
	// close to ProcessCrash. Parts commit without syncing
	// (persistence.SyncNormal), and one shared persistence.Barrier syncs
	// the data directory's file system for all the commits made meanwhile;
	// replies and sent messages wait for that sync. Linux only (syncfs);
	// elsewhere Open fails and PowerLossPerCommit is the choice.
	PowerLoss Durability = iota

	// PowerLossPerCommit: an acknowledged message survives a power loss;
	// every commit of every part syncs its own log (persistence.SyncFull).
	PowerLossPerCommit

	// ProcessCrash: an acknowledged message survives a crash of the
	// process, not a power loss or a crash of the operating system
	// (persistence.SyncNormal, no barrier).
	ProcessCrash
)

// String returns the name of the durability level.
func (d Durability) String() string {
	switch d {
	case PowerLoss:
		return "power-loss"
	case PowerLossPerCommit:
		return "power-loss-per-commit"
	case ProcessCrash:
		return "process-crash"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// syncMode is the persistence.SyncMode that parts' files use.
func (d Durability) syncMode() persistence.SyncMode {
	if d == PowerLossPerCommit {
		return persistence.SyncFull
	}
	return persistence.SyncNormal
}

// DefaultMaxMailbox is the bound on one part's mailbox when
// Options.MaxMailbox is zero: at a few hundred bytes per message, a few MiB
// per part at most.
const DefaultMaxMailbox = 10_000

// Batch bounds used when Options leave them zero.
const (
	DefaultMaxBatch      = 256
	DefaultMaxBatchDelay = 10 * time.Millisecond
)

// Stats are counters of the work a System did since Open.
type Stats struct {
	Messages uint64 // messages handled by parts (each in its own savepoint)
	Commits  uint64 // batch transactions committed (successfully or not)
	Syncs    uint64 // syncs of the shared barrier (PowerLoss only)

	Restarts    uint64 // parts restarted by their parents after failures
	Escalations uint64 // parents that gave up (intensity exceeded) and failed

	Passivations uint64 // parts stopped because idle or over MaxActiveParts

	// Relays counts messages sent by handlers outside their own subtree,
	// which pass through the smallest whole containing both ends.
	Relays uint64

	Deletions uint64 // parts deleted (System.Delete, Context.Delete), each with its subtree
}
