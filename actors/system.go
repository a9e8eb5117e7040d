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

// A System is a tree of parts on a data directory. It is safe for
// concurrent use.
//
// Its fields are what every part and every goroutine of the runtime share
// (the configuration, the directory, the registry of active parts, the
// node-wide components: barrier, passivator, alarm index, drains, the
// count of messages in flight, the counters), which is why there are more
// than 15; each is either set by Open and never changed, safe for
// concurrent use by itself, or owned by one goroutine as its comment says.
type System struct {
	dir   string
	tree  *tree
	opts  Options
	log   *slog.Logger
	lock  *os.File
	clock Clock // Options.Clock, or the wall clock

	as         *actor.ActorSystem
	dispatcher *dispatcher
	root       *part    // the guardian: parent of the top-level parts, no file
	parts      sync.Map // Path.String() -> *part, every active part

	barrier      *persistence.Barrier // PowerLoss only
	stoppedParts sync.Map             // Path.String() -> chan struct{}, closed once the commits of a stopped part are synced
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

	// trace, when not nil, is told of each part's file opening and
	// closing, in order, on the part's goroutine (tests only).
	trace func(event string, p Path)

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
	clock := opts.Clock
	if clock == nil {
		clock = realClock{}
	}
	alarms, err := openAlarmIndex(ctx, dir, opts.Durability.syncMode(), clock.Now())
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
		clock:       clock,
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
	return int(v.(*part).gauges.queued.Load())
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
