package actors

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/persistence"
)

// lockFileName is the runtime's lock on a data directory. Like every name
// the runtime keeps in a data directory, it starts with '_', which no
// encoded segment does.
const lockFileName = "_fractal.lock"

// rootFileName is the file of the tree's root, which records the top-level
// parts that have been activated (see System.Children).
const rootFileName = "_fractal.db"

// maxHops bounds how often one message may be rerouted (because the part it
// was queued for stopped under it) before its caller gets ErrUndeliverable.
const maxHops = 64

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
	// for it. It runs on the part's goroutine and must be fast.
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
	// handler, or an error. It must return when ctx is done.
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
}

// A System is a tree of parts on a data directory. It is safe for
// concurrent use.
type System struct {
	dir  string
	tree *tree
	opts Options
	log  *slog.Logger
	lock *os.File

	as         *actor.ActorSystem
	dispatcher *dispatcher
	root       *part    // the guardian: parent of the top-level parts, no file
	parts      sync.Map // Path.String() -> *part, every active part

	barrier      *persistence.Barrier // PowerLoss only
	stoppedParts sync.Map             // Path.String() -> *part stopped with commits not synced yet
	metrics      *metrics             // nil without Options.Registerer
	messages     atomic.Uint64
	commits      atomic.Uint64
	restarts     atomic.Uint64
	escalations  atomic.Uint64
	passivations atomic.Uint64
	relays       atomic.Uint64

	passivator passivator
	maxActive  int // cap on active parts; <= 0: none
	alarms     *alarmIndex

	inflight    inflight
	drains      drains        // subtrees being drained (see Drain)
	rootStopped chan struct{} // closed when the guardian has stopped
	done        chan struct{} // closed at the end of Close
	stopped     atomic.Bool   // guardian stopped: nothing can be delivered

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating it if needed) the data directory dir and returns a
// System serving the declared kinds. Parts are not opened here: each is
// activated by the first message sent to it, so Open costs the same whatever
// the number of parts on disk.
//
// Only one System may have a directory open at a time; a second Open returns
// an error wrapping ErrLocked.
func Open(ctx context.Context, dir string, opts Options) (*System, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := newTree(opts.Kinds)
	if err != nil {
		return nil, err
	}
	// Options first: a refused Open touches nothing.
	switch {
	case opts.Durability < PowerLoss || opts.Durability > ProcessCrash:
		return nil, fmt.Errorf("actors: unknown durability %d", int(opts.Durability))
	case opts.MaxMailbox < 0:
		return nil, fmt.Errorf("actors: negative MaxMailbox %d", opts.MaxMailbox)
	case opts.MaxBatch < 0:
		return nil, fmt.Errorf("actors: negative MaxBatch %d", opts.MaxBatch)
	case opts.MaxBatchDelay < 0:
		return nil, fmt.Errorf("actors: negative MaxBatchDelay %v", opts.MaxBatchDelay)
	}
	if opts.MaxMailbox == 0 {
		opts.MaxMailbox = DefaultMaxMailbox
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxBatchDelay == 0 {
		opts.MaxBatchDelay = DefaultMaxBatchDelay
	}
	if err := opts.Delivery.setDefaults(); err != nil {
		return nil, err
	}
	maxActive := opts.MaxActiveParts
	if maxActive == 0 {
		maxActive = defaultMaxActive()
	}
	if dir == "" {
		return nil, errors.New("actors: empty data directory")
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("actors: data directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("actors: create data directory: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockFileName))
	if err != nil {
		return nil, err
	}
	var barrier *persistence.Barrier
	if opts.Durability == PowerLoss {
		if barrier, err = persistence.NewBarrier(dir); err != nil {
			unlockDir(lock)
			return nil, fmt.Errorf("actors: durability %s: %w", opts.Durability, err)
		}
	}
	alarms, err := openAlarmIndex(ctx, dir, opts.Durability.syncMode())
	if err != nil {
		if barrier != nil {
			barrier.Close()
		}
		unlockDir(lock)
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &System{
		dir:         dir,
		tree:        t,
		opts:        opts,
		log:         log,
		lock:        lock,
		barrier:     barrier,
		maxActive:   maxActive,
		alarms:      alarms,
		rootStopped: make(chan struct{}),
		done:        make(chan struct{}),
	}
	if opts.Registerer != nil {
		s.metrics = newMetrics(opts.Registerer)
		for _, k := range t.kinds {
			k.m = s.metrics.forKind(k)
		}
		if err := s.metrics.register(s); err != nil {
			if barrier != nil {
				barrier.Close()
			}
			alarms.db.Close()
			unlockDir(lock)
			return nil, fmt.Errorf("actors: registering metrics: %w", err)
		}
		if barrier != nil {
			m := s.metrics
			barrier.OnSync(func(d time.Duration, _ error) {
				m.barrierSyncs.Inc()
				m.syncTime.Observe(d.Seconds())
			})
		}
	}
	s.inflight.init()
	s.dispatcher = newDispatcher()
	s.as = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return log.With("component", "protoactor")
	}))
	// A message that reaches a part after it stopped (dead letter) is
	// routed again rather than lost.
	s.as.EventStream.Subscribe(func(m any) {
		if dl, ok := m.(*actor.DeadLetterEvent); ok {
			if env, ok := dl.Message.(*envelope); ok {
				s.reroute(env)
			}
		}
	})
	s.root = &part{sys: s}
	s.root.pid = s.as.Root.Spawn(s.root.props())
	s.startPassivator()
	s.startAlarms()
	log.Info("system open", "dir", dir, "kinds", len(opts.Kinds), "durability", opts.Durability.String())
	return s, nil
}

// Stats returns the system's counters.
func (s *System) Stats() Stats {
	st := Stats{
		Messages:     s.messages.Load(),
		Commits:      s.commits.Load(),
		Restarts:     s.restarts.Load(),
		Escalations:  s.escalations.Load(),
		Passivations: s.passivations.Load(),
		Relays:       s.relays.Load(),
	}
	if s.barrier != nil {
		st.Syncs = s.barrier.Syncs()
	}
	return st
}

// Active reports whether the part at path is active (its actor running,
// whether or not its file is open).
func (s *System) Active(path string) bool {
	p, err := ParsePath(path)
	if err != nil {
		return false
	}
	_, ok := s.parts.Load(p.String())
	return ok
}

// MailboxLen returns the number of messages waiting in the mailbox of the
// active part at path (the one it is handling included), or 0 when the part
// is not active or path is invalid.
func (s *System) MailboxLen(path string) int {
	p, err := ParsePath(path)
	if err != nil {
		return 0
	}
	v, ok := s.parts.Load(p.String())
	if !ok {
		return 0
	}
	return int(v.(*part).queued.Load())
}

// Children returns the names (last segments) of the children of the part at
// path that have ever been activated, in byte order; path "" means the root
// of the tree. It reads the parent's own file through a read-only
// connection of its own: it activates nothing, scans no directory, and
// works whether the parent is active or not. A part that was never
// activated has no children.
func (s *System) Children(ctx context.Context, path string) ([]string, error) {
	file := filepath.Join(s.dir, rootFileName)
	if path != "" {
		p, err := s.target(path)
		if err != nil {
			return nil, err
		}
		file = p.File(s.dir)
	}
	return readChildren(ctx, file)
}

func readChildren(ctx context.Context, file string) ([]string, error) {
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("actors: children: %w", err)
	}
	defer db.Close()
	var names []string
	err = db.View(ctx, func(tx *persistence.Tx) error {
		if ok, err := hasTable(tx, childrenTable); err != nil || !ok {
			return err
		}
		names, err = queryStrings(tx, `SELECT name FROM `+childrenTable+` ORDER BY name`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("actors: children of %s: %w", file, err)
	}
	return names, nil
}

// Dir returns the system's data directory, as an absolute path.
func (s *System) Dir() string { return s.dir }

// Tree returns the declared tree, one kind per line, indented by depth.
func (s *System) Tree() string { return s.tree.String() }

// target parses and checks a path given by a caller. Nothing is created for
// a path that fails here.
func (s *System) target(path string) (Path, error) {
	p, err := ParsePath(path)
	if err != nil {
		return Path{}, err
	}
	if _, err := s.tree.match(p); err != nil {
		return Path{}, err
	}
	return p, nil
}

// Request sends msg to the part at path and waits for its reply, which is
// released only after the part's transaction for msg has committed. ctx
// bounds the wait; a message whose ctx is done before its part reaches it is
// not handled.
//
// The error is the handler's own error, or wraps ErrInvalidPath, ErrNoKind,
// ErrPanic, ErrActivation, persistence.ErrCommit or ErrClosed, or is
// ctx.Err(). When ctx ends while the message is being handled, the caller
// cannot know whether it committed.
func (s *System) Request(ctx context.Context, path string, msg any) (any, error) {
	p, err := s.target(path)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.admit(p); err != nil {
		return nil, err
	}
	env := &envelope{to: p, msg: msg, ctx: ctx, reply: make(chan result, 1)}
	if !s.inflight.begin() {
		return nil, ErrClosed
	}
	s.deliver(env)
	select {
	case r := <-env.reply:
		return r.val, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// Send sends msg to the part at path without waiting. Delivery is at most
// once: an error of the handler is logged, not returned.
func (s *System) Send(path string, msg any) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	if err := s.admit(p); err != nil {
		return err
	}
	if !s.inflight.begin() {
		return ErrClosed
	}
	s.deliver(&envelope{to: p, msg: msg, ctx: context.Background()})
	return nil
}

// admit refuses a new message for the active part at p when its mailbox
// already holds Options.MaxMailbox messages: the caller gets an error
// wrapping ErrBackpressure, and memory stays bounded. A part that is not
// active has an empty mailbox.
func (s *System) admit(p Path) error {
	if v, ok := s.parts.Load(p.String()); ok && v.(*part).queued.Load() >= int64(s.opts.MaxMailbox) {
		return fmt.Errorf("%w: %s has %d messages waiting", ErrBackpressure, p, s.opts.MaxMailbox)
	}
	return nil
}

// Restart restarts the active part at path as its parent does after a
// failure: the part's file is closed, its active children are stopped, and
// it is started again from its file. Messages already queued for it are
// handled after the restart. It returns an error wrapping ErrNotActive when
// the part is not active.
func (s *System) Restart(ctx context.Context, path string) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	v, ok := s.parts.Load(p.String())
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotActive, p)
	}
	child := v.(*part)
	done := make(chan error, 1)
	if !s.inflight.begin() {
		return ErrClosed
	}
	defer s.inflight.end()
	if !child.parent.post(&restartChild{child: child, done: done}) {
		return fmt.Errorf("%w: %s", ErrNotActive, p)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
}

// servedHere reports whether the part at path is served by this System,
// not by another node through Options.Remote.
func (s *System) servedHere(path Path) bool {
	r := s.opts.Remote
	return r == nil || r.Local(path)
}

// deliver posts env to its part if active, else to its nearest active
// ancestor, which activates the next level down. Looking a part up never
// passes through its ancestors' mailboxes.
func (s *System) deliver(env *envelope) {
	if s.stopped.Load() {
		s.finish(env, nil, ErrClosed)
		return
	}
	if !s.servedHere(env.to) {
		r := s.opts.Remote
		// Another node's: the hop between nodes is the boundary this
		// message crosses, whatever whole it would pass through here.
		go func() {
			val, err := r.Request(env.ctx, env.to, env.msg)
			s.finish(env, val, err)
		}()
		return
	}
	if s.holdForDrain(env.to, env) {
		return // its subtree is being drained: delivered at its release
	}
	for p := env.next(); !p.IsRoot(); p = p.Parent() {
		if v, ok := s.parts.Load(p.String()); ok && v.(*part).post(env) {
			return
		}
	}
	if !s.root.post(env) {
		s.finish(env, nil, ErrClosed)
	}
}

// reroute delivers again a message that its part could not handle because
// it was stopping.
func (s *System) reroute(env *envelope) {
	env.hops++
	if env.hops > maxHops {
		s.finish(env, nil, fmt.Errorf("%w: %s: rerouted %d times", ErrUndeliverable, env.to, maxHops))
		return
	}
	s.deliver(env)
}

// dispatch delivers a message sent by a handler, after its commit.
func (s *System) dispatch(env *envelope) {
	if env.timer != nil {
		env.timer.startTimer(env)
		return
	}
	s.inflight.add()
	if err := s.admit(env.next()); err != nil {
		s.finish(env, nil, err) // logged as dropped: Send is at most once
		return
	}
	s.deliver(env)
}

// finish answers env, once. Every envelope is finished exactly once: that is
// what Close waits for.
func (s *System) finish(env *envelope, val any, err error) {
	if env.finished.Swap(true) {
		return
	}
	if env.done != nil {
		env.done(val, err)
	} else if env.reply != nil {
		env.reply <- result{val, err}
	} else if err != nil {
		s.log.Warn("message dropped", "to", env.to.String(), "from", env.from.String(), "type", fmt.Sprintf("%T", env.msg), "err", err)
	}
	s.inflight.end()
}

// Close stops every part, leaves first, and closes every file, after
// waiting (within ctx) for the messages already accepted to be handled,
// including the messages their handlers send. New requests fail with
// ErrClosed from the moment Close is called. Calling Close again returns the
// first call's result.
func (s *System) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *System) close(ctx context.Context) error {
	var errs []error
	s.stopPassivator()
	s.stopAlarmWaker()
	if err := s.inflight.drain(ctx); err != nil {
		errs = append(errs, fmt.Errorf("actors: close: waiting for messages in flight: %w", err))
	}
	// Stopping the guardian stops its children first, and theirs before
	// them: protoactor-go finalizes a parent's stop only after all its
	// children have terminated, so files close leaves first.
	s.as.Root.Stop(s.root.pid)
	select {
	case <-s.rootStopped:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("actors: close: parts still stopping: %w", ctx.Err()))
	}
	if s.barrier != nil {
		if err := s.barrier.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.alarms.db.Close(); err != nil {
		errs = append(errs, err)
	}
	s.stopped.Store(true)
	close(s.done)
	s.as.Shutdown()
	s.dispatcher.close()
	if s.metrics != nil {
		s.metrics.unregister()
	}
	if err := unlockDir(s.lock); err != nil {
		errs = append(errs, err)
	}
	s.log.Info("system closed", "dir", s.dir)
	return errors.Join(errs...)
}

// ensureDir creates the directory of the part at p and any missing
// ancestors. Most parts are created under a parent whose directory exists,
// so the part's own directory is tried first.
//
// With PowerLossPerCommit each new directory's parent is synced, so that the
// new entry survives a power loss along with the file created in it. With
// PowerLoss it is not: no reply of the part is released before the
// barrier's next sync, which starts after the part's first commit and syncs
// the whole file system, new directory entries included. With ProcessCrash
// nothing is promised across a power loss.
func (s *System) ensureDir(p Path) error {
	dir := p.Dir(s.dir)
	err := os.Mkdir(dir, 0o755)
	switch {
	case errors.Is(err, fs.ErrExist):
		return nil
	case err == nil:
		if s.opts.Durability == PowerLossPerCommit {
			return syncDir(filepath.Dir(dir))
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("actors: create directory of %s: %w", p, err)
	}
	cur := s.dir
	for _, seg := range p.Segments() {
		next := filepath.Join(cur, EncodeSegment(seg))
		err := os.Mkdir(next, 0o755)
		switch {
		case err == nil:
			if s.opts.Durability == PowerLossPerCommit {
				if err := syncDir(cur); err != nil {
					return err
				}
			}
		case !errors.Is(err, fs.ErrExist):
			return fmt.Errorf("actors: create directory of %s: %w", p, err)
		}
		cur = next
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("actors: sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("actors: sync directory %s: %w", dir, err)
	}
	return nil
}

// inflight counts the messages accepted and not yet finished, so that Close
// can wait for them. Messages sent by handlers are counted before the
// message that sent them finishes, so the count cannot reach zero while
// work that was accepted is still under way.
type inflight struct {
	mu      sync.Mutex
	n       int
	closing bool
	zero    chan struct{} // closed once n is zero while closing
	zeroed  bool          // zero is closed
}

func (f *inflight) init() { f.zero = make(chan struct{}) }

// begin counts a message from outside; it fails once Close has begun.
func (f *inflight) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.n++
	return true
}

// add counts a message sent by a handler, which is accepted while closing.
func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	f.signal()
}

// signal closes zero when closing and nothing is in flight; f.mu is held.
func (f *inflight) signal() {
	if f.n == 0 && f.closing && !f.zeroed {
		f.zeroed = true
		close(f.zero)
	}
}

func (f *inflight) drain(ctx context.Context) error {
	f.mu.Lock()
	f.closing = true
	f.signal()
	f.mu.Unlock()
	select {
	case <-f.zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
