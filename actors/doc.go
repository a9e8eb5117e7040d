// Package actors is fractal's runtime: a tree of parts, each an actor that
// owns one SQLite file, built on protoactor-go.
//
// The whole accepts requests, its parts accept requests, and the parts of
// parts accept requests. A part handles each message inside a transaction on
// its own file, and its reply leaves only after that transaction commits.
//
// # The tree
//
// An application declares the tree's shape as data: one Kind per level,
// matched by a path pattern ("mail", "mail/*", "mail/*/*"). Open validates
// the kinds: every level's parent level must be declared, because a part is
// activated and supervised by its parent, so the path tree and the
// supervision tree are one tree.
//
// # Paths
//
// A Path names a part: segments separated by '/', each any non-empty UTF-8
// string of at most MaxSegmentBytes bytes other than "." and "..", without
// '/'. Inside a handler, paths may be relative ("..", "../bob@example.org").
// An invalid path is refused with an error wrapping ErrInvalidPath and
// creates nothing.
//
// # Files
//
// The data directory mirrors the tree: the part at mail/example.org owns
// DIR/mail/example.org/_part.db, and its children are the directories beside
// that file, so a subtree is one directory. Segments become file names by a
// reversible encoding that is safe on case-insensitive file systems (see
// EncodeSegment); names that start with '_' belong to the runtime.
//
// # The runtime's tables
//
// Beside the kind's tables, a part's file holds the runtime's, named
// _fractal_*: the records of its children (_fractal_children,
// _fractal_created), its durable outbox (_fractal_outbox, _fractal_lanes,
// _fractal_dead), its inbox (_fractal_inbox, _fractal_skipped), its alarms
// (_fractal_alarms) and its deleted children (_fractal_deleted). They have
// a schema version of their own, apart from the kind's PRAGMA user_version:
// it is kept in the file's PRAGMA application_id, which therefore belongs
// to the runtime (a kind's migration that sets it does not keep it), with
// the groups of tables the file has. The part's activation reads it with
// the file's header and, in the kind's migration transaction, brings the
// runtime's tables up to date; a current file costs no further read and no
// write. A file whose runtime schema is newer than the code is refused, as
// a file whose kind schema is newer: ErrActivation wrapping
// persistence.ErrSchemaTooNew, the file left untouched. A file written
// before the runtime's tables had a version (application_id 0, any of the
// tables created on first use) is migrated at its next activation, keeping
// its rows.
//
// A file gets the tables it needs, no more: a part whose kind may have
// children (some kind is declared below it), and the data directory's root
// file, get the records of children at activation; a leaf of a trivial kind
// gets none (its file stays two pages, 8 KiB). The outbox, the inbox, the
// alarms and the deleted children are created once in a file's life, with
// the first message that needs them (its first durable send or Call, its
// first durable delivery, its first alarm, the first deletion of a child),
// in that message's transaction. No later message runs DDL or looks for a
// table.
//
// # A message's life
//
// Request and Send address a part by path. An active part is reached
// directly; a part that is not active is activated by its nearest active
// ancestor, which spawns it as its child. The part opens its file on its
// first message (creating it and applying the kind's migrations), begins a
// transaction, and calls its Handler with a Context that gives SQL access
// inside that transaction and holds the messages sent with Context.Send.
//
//   - The handler returns a reply: the transaction commits (durably, at the
//     configured persistence.SyncMode), then the reply is released to the
//     caller and the held messages are sent.
//   - The handler returns an error: the transaction rolls back, the caller
//     gets the error, nothing is sent.
//   - The commit fails: the caller gets an error wrapping
//     persistence.ErrCommit, nothing is sent, the file is unchanged.
//   - The handler panics: the transaction rolls back, the caller gets a
//     *PanicError (wrapping ErrPanic), and the part's parent restarts it: its
//     file is closed and reopened and a new handler is made, so everything in
//     memory is rebuilt from what was committed.
//
// # Promises
//
//   - No reply and no sent message is observable before the state change
//     that produced it is durable.
//   - A message's effects are atomic: all of its writes, or none.
//   - A restart loses nothing that was acknowledged, and neither does Close
//     followed by Open on the same directory.
//   - One part's failure does not stop its siblings.
//
// Messages sent with Send and Context.Send are delivered at most once.
//
// # Group commit and durability
//
// A part does not commit after every message. While more messages wait in
// its mailbox they join its open transaction, each under a savepoint of its
// own (a failing message is rolled back alone); the batch commits when the
// mailbox is empty, or after Options.MaxBatch messages or
// Options.MaxBatchDelay, whichever comes first. The decision is taken on the
// part's own goroutine after each message. Held replies and messages leave
// only after the commit, so batching weakens no promise. A failed commit
// turns every reply of its batch into an error.
//
// Options.Durability says what an acknowledged message survives. The
// default, PowerLoss, commits without syncing and lets one shared
// persistence.Barrier sync the data directory's file system for all the
// parts that committed meanwhile; replies wait for that sync. A batch that
// wrote nothing causes no sync, but still waits for a pending one when it
// may have read unsynced writes of its part. PowerLossPerCommit syncs every
// commit (SQLite's synchronous=FULL); ProcessCrash never syncs (NORMAL).
//
// # Supervision
//
// The parent of a part supervises it with OTP semantics (package
// supervisor): Kind.Supervision says how a part supervises its children
// (one_for_one, one_for_all or rest_for_one, restart intensity, backoff),
// Kind.Restart how a part of that kind is restarted (permanent, transient,
// temporary). A panicking handler is a failure; beyond the intensity the
// parent stops its children and fails itself, and its own parent decides.
// A restarted part reloads from its file at once. A one_for_all or
// rest_for_one group restarts as OTP does: its children stop one after
// another in reverse start order, each stop complete before the next, then
// start one after another in start order, each activation complete before
// the next; messages sent to them meanwhile wait and are handled by the new
// incarnations. A handler ends its part normally with Context.Stop: after
// the message commits, a transient or temporary part stops and its next
// message activates it again, and a permanent part is restarted (OTP's
// rules for a normal exit). A file that cannot be
// opened (corrupt, newer schema) is not a crash: the part answers its
// callers with an error naming it, tries again at its next message, and
// its siblings are unaffected.
//
// # Routing
//
// Request and Send reach an active part directly. Inside a handler,
// Context.Send to the part's own subtree goes straight down; to anywhere else
// it escalates through the smallest whole that contains both ends, then goes
// down from there, as mail between domains goes through the whole. Parents
// record the children they activate in their own file, so System.Children
// lists a level of the tree without activating anything, and System.Scatter
// asks every part matching a pattern ("mail/*/*") with bounded concurrency,
// streaming one result or error per part before a deadline.
//
// # Calls between parts
//
// A handler may wait on other parts with System.Request (and Scatter,
// Restart, Drain, DeadLetters, which wait on parts too). It must pass its
// Context.Context: that context carries the call path, the parts whose
// handlers wait along it, the calling part last. A part handles one
// message at a time, so a request that would wait on a part of its own path
// could only wait out its deadline; it fails at once instead, sending
// nothing, with an error wrapping ErrCallCycle whose text names the cycle
// ("actors: call cycle: a -> b -> a"). The handler decides what its own
// message does with it: returned, the error rolls the message back;
// handled, the message commits. Refused so are:
//
//   - a request to the calling part itself (the error wraps ErrCallToSelf
//     too), or to a part that called it, directly or through others;
//   - a request for a part that is not active whose nearest active
//     ancestor is on the path: a part's children are activated from its
//     own mailbox, so a part requesting its own passivated child would wait
//     for itself (an active child is reached directly; Context.Send and
//     Context.Call reach a child whatever its state);
//   - System.Restart of a child of a part on the path (the parent restarts
//     it), and System.Drain of a subtree whose parent or one of whose parts
//     is on the path.
//
// Across nodes the call path travels with the request (see package
// cluster): a cycle between nodes fails at once too. The Context passed to
// Activator.Activate carries its own part only, not the path of the
// request that activated it. What is not seen waits for the request's
// deadline, as an OTP call does: a request made with another context than
// the handler's (context.Background()), and two requests that cross on
// separate paths (a, handling one call, requests b while b, handling
// another, requests a). Nor is a wait that group commit hides: when r's
// request to p has been handled but its reply is held in p's open batch,
// a later message of that batch whose handler requests r waits, because r
// still waits for its reply, which leaves only when the batch commits.
// Prefer Context.Call (durable, asynchronous) between parts that may call
// each other.
//
// # Durable messages
//
// Context.Send is at most once. Context.SendDurable and Context.Call are
// store and forward, as mail is: the message is written to an outbox table
// in the sender's own file, in the transaction of the handler that sends
// it, and delivered once that commit is durable; it is retried with
// exponential backoff (Options.Delivery) while the receiver is passivated,
// failing, restarting or on a node that cannot be reached. The receiver
// records the sender's sequence number in an inbox table in the same
// transaction as the handling, so a redelivery is acknowledged without
// being handled again: effects happen exactly once. Messages from one sender
// to one receiver form a lane, delivered in order, one at a time.
//
// Call is durable request and reply: the receiver's reply value, or its
// handler's error, comes back to the caller as a Reply message, through
// the receiver's outbox. That is enough for a saga (examples/bank: debit,
// then credit, refund when the credit is refused).
//
// A message that still fails after Delivery.MaxAttempts attempts or
// Delivery.MaxAge becomes a dead letter, kept in the sender's file
// (System.DeadLetters, table _fractal_dead); System.RedriveDeadLetter sends it
// again, System.DiscardDeadLetter drops it (answering a dead Call's caller
// with ErrDiscarded). The messages behind a dead letter in its lane go on.
//
// The inbox keeps one row per sender, not one per message. A row is pruned
// Delivery.InboxRetention after its last message; that must exceed
// Delivery.MaxAge plus LaneIdle, which Open checks: no redelivery is older
// than MaxAge, and a sender that stopped using a lane for LaneIdle starts a
// new one, with an epoch the receiver has not seen.
//
// A parent can keep a store of its own fed by its children's durable
// events: a child sends them with SendDurable("..", event) in the
// transaction that changed its state, and the parent applies each exactly
// once, so the derived store stays consistent after any crash
// (examples/bank's branch totals).
//
// Message types that are stored or cross nodes are registered by name
// (RegisterMessage) and encoded as JSON, at most MaxMessageSize bytes.
//
// # Passivation and timers
//
// A part that has received no message for its kind's IdleTimeout (default
// DefaultIdleTimeout) is passivated: its batch committed, its file closed,
// its actor stopped; nothing of it stays in memory, and its next message
// activates it again from its file. Options.MaxActiveParts caps the number
// of active parts (by default from the process's descriptor limit, three
// descriptors per open part): beyond it the least recently used idle leaves
// are passivated. A part with active children is not passivated. Messages
// that reach a part while it stops are held by its parent and delivered to
// its next activation: passivation loses nothing.
//
// Context.After sets a plain timer: a message to the part itself after a
// delay, armed only if the handler commits, kept in memory and cancelled
// when the part stops.
//
// Context.SetAlarm sets a durable alarm, in the message's transaction: the
// part's handler receives an Alarm when it is due, even if the part was
// passivated or the process restarted meanwhile. Alarms are kept in the
// part's own file; an index in the data directory (a superset of the
// parts' alarms, healed at every activation) finds due ones without
// opening any part. Delivery is at least once: a failing handler's alarm is
// retried with exponential backoff.
//
// # Deleting a part
//
// System.Delete(ctx, path) deletes a part and its subtree: their files,
// the parent's record of the part, their alarms. A handler deletes its own
// part with Context.Delete: the deletion starts once the message has
// committed (its reply and messages still go out), and the request is
// kept in the part's file, as an alarm of the runtime's, so a crash or a
// Close before it is done does not forget it.
//
// The parent coordinates, in an order that a crash cannot leave half
// done. The subtree's active parts are stopped; the parent commits, in
// one transaction of its own file, a tombstone for the child
// (_fractal_deleted) and the removal of its records, and waits for that
// commit to be durable; the child's directory is renamed to a name the
// runtime reserves in the parent's directory (it starts with '_', which no
// part's does), then removed. Before the tombstone is durable the part is
// whole; after it, the part is gone, and whatever is left of its files is
// removed by its parent when the parent next opens its file. The fractal
// command's tree marks such a part "(deleted)"; check skips the reserved
// names.
//
// Delete is atomic with respect to messages. Those that reach the subtree
// before it takes effect are handled. From then on, the messages from
// outside the subtree wait (at most Options.MaxMailbox, as for Drain),
// and once the part is gone they get an error wrapping ErrNoPart, as does
// every later message to the path or below it: Request, Send, a
// handler's Send, durable messages, alarms. Nothing is created for them,
// and Scatter skips the part. A durable message to a deleted part becomes a
// dead letter of its sender at once, its error naming ErrNoPart, not after
// Delivery.MaxAttempts.
//
// A deleted path stays deleted until System.Reuse, which lets its next
// message activate a new, empty part there. A path that is free again
// after a while instead would let a late message (a retry, a redriven dead
// letter, a stale link) create an empty part quietly; the tombstone costs
// the parent one row per deleted child, where it kept one per child.
//
// A part's durable messages are delivered before its file goes, and so are
// those of every part below it: Delete waits for them within its context
// (the subtree serving its callers meanwhile; they wait only for the last
// check, once the outboxes were found empty), and otherwise returns an
// error wrapping ErrOutboxNotEmpty and deletes nothing. Context.Delete
// tries again every 30 seconds (the alarm's lease) for as long as that
// lasts. What is in the deleted files goes with them, their dead letters
// and inbox included: replies to the calls they made become dead letters of
// the parts that answer.
//
// A deleted child leaves its parent's supervision: it is stopped, never
// restarted, and its parent activates it again only after Reuse.
//
// Delete deletes what this System serves: a path that Options.Remote says
// another node serves is refused with ErrRemotePart. In a cluster, delete a
// part on the node that serves it; the parent's record it updates is that
// node's (for a part at the placement depth, the copy of its parent there),
// and a subtree that spans several nodes is deleted one node's part at a
// time.
//
// # Time
//
// The runtime reads the time and arms its timers through the System's Clock
// (Options.Clock, the wall clock by default): batch bounds
// (Options.MaxBatchDelay), Context.After, alarms and their retries, the
// retries and ages of durable messages, restart backoff, idle timeouts and
// the passivator's ticks, the pause between two passes it makes for
// Options.MaxActiveParts, the retry of an activation that found no file
// descriptor, and the times it records in part files. With a fake clock
// every one of those delays lasts until the test advances the clock.
//
// A handler reads that clock with Context.Now, for example to set an alarm,
// so that a test with a fake clock (actortest.Clock) controls it too.
// Metrics durations stay on the wall clock, as do request deadlines, which
// are the caller's context's, Delivery.Timeout, a context deadline on
// each delivery attempt (and on each attempt of a Context.Delete), and the
// pauses of a deletion between two looks at the outboxes it waits for, or
// at a parent that has not yet heard that its child stopped (polls, not
// delays the runtime keeps).
//
// # Bounds
//
// Every queue is bounded: a part's mailbox holds at most Options.MaxMailbox
// messages (default DefaultMaxMailbox) before Request and Send return
// ErrBackpressure; a batch at most Options.MaxBatch messages; timers
// MaxTimers per part; active parts Options.MaxActiveParts; Scatter's
// requests in flight its Concurrency; durable deliveries in flight one per
// lane and 1,024 lanes per part (more lanes wait their turn in the outbox,
// which is on disk). A part with a delivery in flight or waiting for its
// retry is not passivated, so such parts can exceed MaxActiveParts. Messages held by a parent for a child
// that is activating or stopping are not counted in any mailbox; those
// held for a subtree being drained or deleted are at most
// Options.MaxMailbox per subtree.
//
// # Shutdown
//
// Close stops accepting requests, waits for the messages already accepted,
// then stops the parts leaves first and closes every file. Open on the same
// directory brings every part back with its state, activated by its next
// message: Open itself reads no part.
//
// # Metrics
//
// With Options.Registerer set, Open registers the system's Prometheus
// metrics there and Close unregisters them (so a registry serves one open
// System at a time, and a System can be opened again on it); with nil,
// nothing is measured and nothing is registered anywhere. Labels take only
// bounded values: kind (a Kind.Name), outcome and strategy; never a path.
//
//	fractal_messages_total{kind,outcome}          counter: messages that reached a part; outcome is
//	                                              ok, error, panic, commit_error, sync_error,
//	                                              activation_error or canceled
//	fractal_handler_duration_seconds{kind}        histogram: time in the handler, per message
//	fractal_commit_duration_seconds{kind}         histogram: one batch's commit (without the sync)
//	fractal_batch_messages{kind}                  histogram: messages per group-commit batch
//	fractal_barrier_wait_seconds                  histogram: hand-over to the barrier until release
//	fractal_barrier_syncs_total                   counter: syncs of the barrier
//	fractal_barrier_sync_duration_seconds         histogram: one sync
//	fractal_activations_total{kind,outcome}       counter: activations, outcome ok or error
//	fractal_activation_duration_seconds{kind}     histogram: one activation (open, migrate, Activate)
//	fractal_restarts_total{kind,strategy}         counter: restarts, by the restarted part's kind and
//	                                              its parent's strategy
//	fractal_escalations_total{kind}               counter: parents that exceeded their intensity
//	fractal_passivations_total{kind}              counter: parts passivated (idle, or over the cap)
//	fractal_deletions_total{kind}                 counter: parts deleted, each with its subtree
//	fractal_alarm_deliveries_total{kind,outcome}  counter: alarms delivered, outcome ok or error
//	fractal_alarm_lateness_seconds                histogram: due time to delivery
//	fractal_durable_deliveries_total{outcome}     counter: delivery attempts of durable messages, ok or error
//	fractal_durable_delivery_seconds              histogram: one attempt, dispatch to acknowledgement
//	fractal_dead_letters_total                    counter: durable messages moved to the dead letters
//	fractal_scatter_parts                         histogram: parts asked per Scatter iteration
//	fractal_scatter_part_errors_total             counter: parts of a Scatter that failed or were late
//	fractal_active_parts{kind}                    gauge: active parts
//	fractal_mailbox_messages{kind}                gauge: messages waiting in active parts' mailboxes
//	fractal_part_file_bytes{kind}                 gauge: size of the active parts' files
//
// The three barrier metrics exist with PowerLoss only. The last three are
// sampled at scrape time: a scrape walks the map of active parts once,
// reading two atomic counters per part, so it costs O(active parts) and
// blocks no part. The file sizes are those of each active part's database
// and write-ahead log as last observed with a stat: at activation, then
// after a commit that wrote, at most once a second per part; parts that
// are not active are not counted, and no scrape touches the disk. The
// series per metric are bounded by the number of kinds (times 7 outcomes,
// or 3 strategies). On the hot path a message costs two clock reads and
// one histogram observation for its handler and one counter increment at
// its release; a batch costs two clock reads and two observations at its
// commit, and two more for the barrier wait. No label is looked up per
// message: the per-kind children are resolved once at Open.
//
// ServeMetrics serves a registry at /metrics on a loopback address, and
// MetricsHandler returns the handler for an application's own server.
//
// protoactor-go's own OpenTelemetry metrics are not used: the runtime
// never configures a MetricsProvider, so protoactor-go records nothing,
// and it never uses protoactor-go's default Prometheus provider, which
// would serve on every network interface.
//
// # Testing
//
// Package actortest runs kinds against a temporary data directory and checks
// every file's integrity when the test ends. Its Clock is a fake Clock that
// a test advances instead of sleeping, and its condition waits (Eventually,
// CheckFor, WaitDelivered) replace polling loops.
package actors
