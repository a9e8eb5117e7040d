package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// An envelope carries one message to one part.
type envelope struct {
	to    Path
	from  Path // the sending part, for logs; root when sent from outside
	msg   any
	ctx   context.Context
	reply chan result // buffered(1); nil for Send

	// A message a handler sends outside its own subtree escalates: it
	// first goes to via, the smallest whole containing both sender and
	// target, and down from there. relayed is set until it passed via.
	via     Path
	relayed bool

	// A timer set by Context.After: sent to timer's part after delay.
	timer *part
	delay time.Duration

	// done, when not nil, receives the reply instead of reply (a durable
	// delivery's sender waits so, without a goroutine).
	done func(any, error)

	hops     int         // times rerouted
	finished atomic.Bool // answered (see System.finish)
}

// next returns where env goes next: the common whole it must pass through,
// then its target.
func (env *envelope) next() Path {
	if env.relayed {
		return env.via
	}
	return env.to
}

type result struct {
	val any
	err error
}

// restartChild asks a parent to restart one of its children.
type restartChild struct {
	child *part
	done  chan error
}

// A part is one node of the tree: the state shared by all incarnations of
// the actor at one path. Fields below mu are owned by the part's mailbox
// goroutine (protoactor-go runs one message, middleware call included, at a
// time), except where noted.
//
// Goroutine and lock rules: post takes mu for reading; the part takes it for
// writing only to mark itself stopping. No other lock is held while mu is.
type part struct {
	sys    *System
	path   Path
	kind   *kindSpec // nil for the guardian
	parent *part     // nil for the guardian
	pid    *actor.PID

	mu       sync.RWMutex
	stopping bool // set once: no message may be posted to pid any more

	queued   atomic.Int64 // envelopes posted to the mailbox and not yet received (any goroutine)
	unsynced atomic.Int64 // commits of p still waiting for the barrier (p's goroutine and the barrier's)
	deferred atomic.Bool  // p keeps a drained batch open until the barrier's callback (see deferCommit)

	lastActive  atomic.Int64 // unix nanoseconds of the last message received (see passivation)
	nchildren   atomic.Int32 // len(children), for the passivator's goroutine
	passivating bool         // p stops because it was idle, not because it failed or the system closes

	failures atomic.Int64           // handler panics since activation (see System.Info)
	lastErr  atomic.Pointer[string] // the last failure or activation error

	tmu       sync.Mutex             // guards the timers: set from the releasing goroutine, cancelled from p's
	timers    map[uint64]*time.Timer // waiting timers (Context.After), at most MaxTimers
	timerSeq  uint64
	timersOff bool // p stopped: no new timer

	fileBytes atomic.Int64 // size of p's files as last observed (p's goroutine writes, scrapes read)
	statAt    time.Time    // when fileBytes was observed

	alive     bool                   // started and not stopping or restarting
	restarted bool                   // the next Started follows a restart
	batch     *batch                 // the open group-commit transaction, if any
	current   *envelope              // envelope being received (see MessageReceived)
	db        *persistence.DB        // nil until the first message after a (re)start
	handler   Handler                //
	children  map[string]*part       // active children by segment
	pending   map[string][]*envelope // messages for children that are stopping
	stash     []*envelope            // messages received while restarting
	sup       *supervisor.Supervisor // decisions about the children (see supervisorOf)

	recorded bool // its parent noted that its file was created: the file must exist

	ob         outbox       // durable deliveries in flight (guarded by its own mutex)
	durableOut atomic.Int64 // outbox rows up to this id are durable (set as batches are released)
}

// props returns the protoactor-go props of p: its mailbox carries p as
// middleware, and its supervisor strategy applies to p's children.
func (p *part) props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return (*partActor)(p) },
		actor.WithMailbox(actor.Unbounded(p)),
		actor.WithDispatcher(p.sys.dispatcher),
		actor.WithSupervisor(p), // p decides for its children: see HandleFailure
	)
}

func (p *part) logger() *slog.Logger {
	return p.sys.log.With("path", p.path.String())
}

// post puts env in p's mailbox unless p is stopping. It is safe from any
// goroutine. Because stopping is set under the write lock, nothing is posted
// to a mailbox after its part began to stop, and whatever was posted before
// is either handled or rerouted (see MessageReceived).
func (p *part) post(msg any) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopping {
		return false
	}
	p.sys.as.Root.Send(p.pid, msg)
	return true
}

// partActor is the protoactor-go actor of a part; its state lives in part
// so that it survives restarts.
type partActor part

// Receive implements actor.Actor.
func (a *partActor) Receive(c actor.Context) {
	p := (*part)(a)
	msg := c.Message()
	switch m := msg.(type) {
	case *envelope:
		p.receive(c, m)
	case flushBatch:
		// Committed below: batchDone holds once the mailbox is drained.
	case *restartChild:
		p.restartChild(c, m)
	case *actor.Started:
		p.alive = true
		if p.restarted && p.kind != nil {
			// A restart reloads at once, as OTP's init does: the handler
			// is rebuilt and Activate reruns from what is on disk.
			p.restarted = false
			if err := p.open(); err != nil {
				p.logger().Warn("reactivation after restart failed", "err", err)
			}
		}
		p.restarted = false
		p.receiveStash(c)
	case *actor.Restarting:
		p.alive = false
		p.stopTimers(false)
		p.ob.stop()
		p.restarted = true
		p.commit()
		p.closeDB()
	case *actor.Stopping:
		p.alive = false
		p.ob.stop()
		p.commit()
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		if p.kind != nil {
			if p.sys.parts.CompareAndDelete(p.path.String(), p) {
				p.sys.passivator.active.Add(-1)
			}
		}
		// A part stopped after a failure has a suspended mailbox: resume
		// it, so that the messages still queued there reach
		// MessageReceived and are rerouted instead of stranded. Nothing is
		// handled by this incarnation any more (alive is false).
		if sup, ok := c.(actor.Supervisor); ok {
			sup.ResumeChildren(c.Self())
		}
	case passivate:
		p.passivate(c)
	case *actor.Stopped:
		p.stopTimers(true)
		p.closeDB()
		p.sys.noteStopped(p)
		p.failPending()
		if p.passivating {
			p.sys.passivations.Add(1)
			if km := p.km(); km != nil {
				km.passivations.Inc()
			}
		}
		if p.kind == nil {
			close(p.sys.rootStopped)
		}
	case *actor.Terminated:
		p.childTerminated(c, m.Who)
	}
	if p.batch == nil {
		return
	}
	if drained, full := p.batchDone(msg); full || (drained && !p.deferCommit()) {
		p.commit()
	}
}

// receiveStash handles, in order, the messages held while p restarted. If
// one of them panics, the ones after it are held again for the next
// incarnation (the panic restarts p once more).
func (p *part) receiveStash(c actor.Context) {
	stash := p.stash
	p.stash = nil
	for i, env := range stash {
		func() {
			defer func() {
				if v := recover(); v != nil {
					p.stash = append(p.stash, stash[i+1:]...)
					panic(v)
				}
			}()
			p.receive(c, env)
		}()
		p.queued.Add(-1) // counted since it was held (the panic path counts its own)
	}
}

// flushBatch asks a part to commit a batch it deferred (see deferCommit).
type flushBatch struct{}

// deferCommit decides, with the shared barrier, to keep a drained batch
// open while an earlier commit of the part still waits for its sync: the
// replies could not leave before the next sync anyway, and one commit per
// part per sync writes one log frame per changed page instead of one per
// batch, which is what a sync pays for. The barrier's callback for that
// earlier commit posts flushBatch, and the part commits then. The batch
// bounds (MaxBatch, MaxBatchDelay) still apply as messages arrive.
func (p *part) deferCommit() bool {
	if p.sys.barrier == nil || p.unsynced.Load() == 0 || !p.alive {
		return false
	}
	p.deferred.Store(true)
	// The callback may have run between the two loads: then it saw no
	// deferred batch, and the part commits now.
	if p.unsynced.Load() == 0 && p.deferred.Swap(false) {
		return false
	}
	return true
}

// batchDone reports whether the open batch should commit after msg: when no
// more envelopes wait in the mailbox (drained), or a bound is reached (full). Deciding here,
// on the part's own goroutine after each message, means the commit never
// overlaps the next message (protoactor-go's MailboxEmpty hook runs after
// the mailbox is marked idle and could).
func (p *part) batchDone(msg any) (drained, full bool) {
	waiting := p.queued.Load()
	if _, ok := msg.(*envelope); ok {
		waiting-- // msg itself is counted until MessageReceived
	}
	full = p.batch.n >= p.sys.opts.MaxBatch || time.Since(p.batch.start) >= p.sys.opts.MaxBatchDelay
	return waiting <= 0, full
}

// MailboxStarted implements actor.MailboxMiddleware.
func (p *part) MailboxStarted() {}

// MessagePosted implements actor.MailboxMiddleware. It counts the
// envelopes waiting in the mailbox, for group commit.
func (p *part) MessagePosted(msg any) {
	if _, ok := msg.(*envelope); ok {
		p.queued.Add(1)
	}
}

// MailboxEmpty implements actor.MailboxMiddleware.
func (p *part) MailboxEmpty() {}

// MessageReceived implements actor.MailboxMiddleware. It runs on the
// mailbox goroutine after every message, including the messages that
// protoactor-go drops without calling Receive because the actor has
// stopped: an envelope that p did not take is routed again, so a message
// queued for a part that stops is not lost.
func (p *part) MessageReceived(msg any) {
	if env, ok := msg.(*envelope); ok {
		p.queued.Add(-1)
		if env != p.current {
			p.sys.reroute(env)
		}
	}
	p.current = nil
}

func (p *part) receive(c actor.Context, env *envelope) {
	if !p.alive {
		if p.restarted && !p.stopping {
			// Restarting: protoactor-go keeps delivering messages while a
			// restart waits for the children to stop. Hold them for the
			// new incarnation rather than bounce them back here.
			p.current = env
			p.stash = append(p.stash, env)
			p.queued.Add(1) // still waiting: counted until handled
		}
		return // stopping: MessageReceived reroutes it
	}
	p.current = env
	p.lastActive.Store(time.Now().UnixNano())
	if env.relayed && env.via == p.path {
		env.relayed = false // passed through the smallest common whole
		p.sys.relays.Add(1)
	}
	next := env.next()
	switch {
	case next == p.path:
		p.handle(env)
	case p.path.IsAncestorOf(next):
		p.route(c, env)
	default:
		p.sys.reroute(env)
	}
}

// route passes env one level down towards where it goes next, activating
// the child on that level if needed.
func (p *part) route(c actor.Context, env *envelope) {
	seg := env.next().segment(p.path.Depth())
	child := p.children[seg]
	if child == nil {
		if p.sys.holdForDrain(env.next().Ancestor(p.path.Depth()+1), env) {
			return // not activated while its subtree is drained (see Drain)
		}
		known := p.recordChild(seg)
		child = p.spawn(c, seg, known)
	}
	if child.post(env) {
		return
	}
	// The child is stopping: hold the message until it has terminated,
	// then activate it again (childTerminated).
	if p.pending == nil {
		p.pending = make(map[string][]*envelope)
	}
	p.pending[seg] = append(p.pending[seg], env)
}

// spawn starts the child seg; recorded says whether its parent noted that
// its file was created.
func (p *part) spawn(c actor.Context, seg string, recorded bool) *part {
	cp, err := p.path.Child(seg)
	if err != nil {
		panic(fmt.Sprintf("actors: routed to invalid child %q of %s: %v", seg, p.path, err)) // paths are validated on entry
	}
	k, err := p.sys.tree.match(cp)
	if err != nil {
		panic(fmt.Sprintf("actors: routed to %s: %v", cp, err)) // kinds are checked on entry
	}
	child := &part{sys: p.sys, path: cp, kind: k, parent: p, recorded: recorded}
	child.pid = c.Spawn(child.props())
	if p.children == nil {
		p.children = make(map[string]*part)
	}
	p.children[seg] = child
	p.nchildren.Add(1)
	child.lastActive.Store(time.Now().UnixNano())
	p.sys.parts.Store(cp.String(), child)
	p.sys.activated()
	if err := p.supervisorOf().Add(seg, k.Restart); err != nil && !errors.Is(err, supervisor.ErrDuplicateChild) {
		p.logger().Error("supervision", "child", seg, "err", err)
	}
	return child
}

// childrenTable is the runtime's table, in each parent's own file, of the
// children it has activated: a subtree can be listed from it without
// activating anything and without scanning the disk.
const childrenTable = "_fractal_children"

// createdTable lists, in a parent's file, the children whose file was
// created: a child listed there whose file is missing lost it (see
// activate). A child is noted in childrenTable before its file exists, and
// here once it does.
const createdTable = "_fractal_created"

// recordChild notes seg in p's file before p activates it for the first
// time, so that once the child has acknowledged anything, the parent's
// record of it is at least as durable: the record is committed before the
// child is spawned, and the child's replies wait for their own commit (and
// the barrier's sync, which covers both files).
//
// A child that is recorded already (every activation but the first) costs
// a read and writes nothing. A new one is inserted in p's open batch, if
// any, which then commits at once: one commit for both, as before the child
// is spawned. Without an open batch (or if the batch cannot take it) the
// record is a transaction of its own.
//
// When p's file cannot be written the child is activated anyway and the
// failure is logged: serving the child matters more than listing it.
func (p *part) recordChild(seg string) (created bool) {
	// record writes seg in tx unless it is there already; it reports
	// whether it wrote, and sets created when the child's file was created
	// before.
	record := func(tx *persistence.Tx) (bool, error) {
		ok, err := hasTable(tx, createdTable)
		if err != nil {
			return false, err
		}
		if ok {
			if err := tx.QueryRow(`SELECT count(*) > 0 FROM `+createdTable+` WHERE name = ?`, seg).Scan(&created); err != nil {
				return false, err
			}
		}
		if ok, err = hasTable(tx, childrenTable); err != nil {
			return false, err
		}
		if ok {
			var n int
			if err := tx.QueryRow(`SELECT count(*) FROM `+childrenTable+` WHERE name = ?`, seg).Scan(&n); err != nil || n > 0 {
				return false, err
			}
		}
		if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS ` + childrenTable + ` (name TEXT PRIMARY KEY) WITHOUT ROWID`); err != nil {
			return false, err
		}
		_, err = tx.Exec(`INSERT OR IGNORE INTO `+childrenTable+` (name) VALUES (?)`, seg)
		return err == nil, err
	}
	if b := p.batch; b != nil && !b.rolledBack {
		// Under a savepoint: a failure here must not undo the batch.
		sp, err := b.tx.Savepoint()
		if err == nil {
			var wrote bool
			if wrote, err = record(b.tx); err == nil {
				if err = sp.Release(); err == nil {
					if wrote {
						p.commit()
					}
					return created
				}
			} else {
				err = errors.Join(err, sp.Rollback())
			}
		}
		p.logger().Debug("recording a child in the open batch", "child", seg, "err", err)
	}
	p.commit()
	db, err := p.childrenDB()
	if err == nil {
		var wrote bool
		err = db.Update(context.Background(), func(tx *persistence.Tx) (err error) {
			wrote, err = record(tx)
			return err
		})
		if err == nil && wrote {
			p.afterSync(func(error) {}) // counted until synced: see activate
		}
	}
	if err != nil {
		p.logger().Error("recording a child in its parent's file", "child", seg, "err", err)
	}
	return created && err == nil
}

// childCreated tells a parent, in an envelope, that its child seg has a
// file (see createdTable).
type childCreated struct{ seg string }

// childCreatedTx notes seg in createdTable, in b's transaction.
func (p *part) childCreatedTx(b *batch, seg string) error {
	bg := context.Background()
	if _, err := b.tx.ExecContext(bg, `CREATE TABLE IF NOT EXISTS `+createdTable+` (name TEXT PRIMARY KEY) WITHOUT ROWID`); err != nil {
		return err
	}
	_, err := b.tx.ExecContext(bg, `INSERT OR IGNORE INTO `+createdTable+` (name) VALUES (?)`, seg)
	return err
}

// childrenDB returns the file that records p's children: p's own file, or,
// for the guardian, the data directory's root file.
func (p *part) childrenDB() (*persistence.DB, error) {
	if p.db != nil {
		return p.db, nil
	}
	if p.kind != nil {
		if err := p.open(); err != nil {
			return nil, err
		}
		return p.db, nil
	}
	db, err := persistence.Open(context.Background(), filepath.Join(p.sys.dir, rootFileName), &persistence.Options{
		Sync: p.sys.opts.Durability.syncMode(),
	})
	if err != nil {
		return nil, err
	}
	p.db = db
	return db, nil
}

func (p *part) childTerminated(c actor.Context, who *actor.PID) {
	for seg, child := range p.children {
		if !child.pid.Equal(who) {
			continue
		}
		delete(p.children, seg)
		p.nchildren.Add(-1)
		if p.sup != nil {
			_ = p.sup.Remove(seg) // already forgotten after a decision to remove it
		}
		held := p.pending[seg]
		delete(p.pending, seg)
		for _, env := range held {
			if p.alive {
				p.route(c, env)
			} else {
				// Restarting or stopping: queue them behind whatever is
				// in the mailbox; a stopping part reroutes them.
				p.sys.as.Root.Send(c.Self(), env)
			}
		}
		return
	}
}

// failPending reroutes the messages held for children, and those held
// during a restart, when p itself stops.
func (p *part) failPending() {
	for _, env := range p.stash {
		p.queued.Add(-1)
		p.sys.reroute(env)
	}
	p.stash = nil
	for seg, held := range p.pending {
		delete(p.pending, seg)
		for _, env := range held {
			p.sys.reroute(env)
		}
	}
}

func (p *part) restartChild(c actor.Context, m *restartChild) {
	child := p.children[m.child.path.Name()]
	if child != m.child || !p.alive {
		m.done <- fmt.Errorf("%w: %s", ErrNotActive, m.child.path)
		return
	}
	sup, ok := c.(actor.Supervisor)
	if !ok {
		m.done <- fmt.Errorf("actors: restart %s: parent context cannot supervise", m.child.path)
		return
	}
	sup.RestartChildren(child.pid)
	m.done <- nil
}

// Activation retries while the process is out of file descriptors: the
// passivator is asked for a pass and the part waits (at most
// openRetries×openRetryDelay, and never past the caller's deadline), so a
// burst over the descriptor limit costs latency, not errors.
const (
	openRetries    = 20
	openRetryDelay = 10 * time.Millisecond
)

// openWaiting is open, retried while it fails for want of descriptors.
func (p *part) openWaiting(ctx context.Context) error {
	for i := 0; ; i++ {
		err := p.open()
		if err == nil || i == openRetries || !outOfDescriptors(err) {
			return err
		}
		p.sys.relieve()
		select {
		case <-time.After(openRetryDelay):
		case <-ctx.Done():
			return err
		}
	}
}

// outOfDescriptors reports whether err may come from the process's
// descriptor limit: EMFILE or ENFILE from the system, or SQLite's "unable
// to open database file", which is what it reports for them.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, persistence.ErrCantOpen)
}

// open opens the part's file, applying its kind's migrations, and runs the
// handler's Activate.
func (p *part) open() error {
	km := p.km()
	if km == nil {
		return p.activate()
	}
	start := time.Now()
	err := p.activate()
	now := time.Now()
	km.activateTime.Observe(now.Sub(start).Seconds())
	if err != nil {
		km.activationKO.Inc()
		return err
	}
	km.activationOK.Inc()
	p.statFiles(now)
	return nil
}

func (p *part) activate() error {
	file := p.path.File(p.sys.dir)
	_, err := os.Stat(file)
	existed := err == nil
	if !existed && p.recorded {
		// Its parent noted that its file was created: the file is gone.
		// Starting it empty would lose silently what it acknowledged.
		return fmt.Errorf("%w: %s: %w: %s (restore it from a backup, or delete the part's row in its parent's %s to start it empty)",
			ErrActivation, p.path, ErrFileMissing, file, createdTable)
	}
	if err = p.create(); err != nil {
		return err
	}
	if !p.recorded && p.parent.kind != nil && p.sys.servedHere(p.parent.path) {
		// Its file exists now: the parent notes it, in its next batch.
		// (A parent served by another node, through Options.Remote,
		// keeps no record of a child here: its file on this node is a
		// routing shell's.)
		p.sys.inflight.add()
		p.sys.deliver(&envelope{to: p.parent.path, from: p.path, msg: childCreated{p.path.Name()}, ctx: context.Background()})
	}
	p.recorded = true
	return nil
}

// create opens (creating it if needed) p's file and makes p ready to
// handle messages.
func (p *part) create() error {
	if err := p.sys.ensureDir(p.path); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrActivation, p.path, err)
	}
	db, err := persistence.Open(context.Background(), p.path.File(p.sys.dir), &persistence.Options{
		Sync:       p.sys.opts.Durability.syncMode(),
		Migrations: p.kind.Migrations,
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrActivation, p.path, err)
	}
	h, err := p.newHandler()
	if err != nil {
		db.Close()
		return fmt.Errorf("%w: %s: %w", ErrActivation, p.path, err)
	}
	if h == nil {
		db.Close()
		return fmt.Errorf("%w: %s: kind %q returned a nil handler", ErrActivation, p.path, p.kind.Name)
	}
	wrote := db.WroteAtOpen()
	if act, ok := h.(Activator); ok {
		var out []*envelope
		var atx *persistence.Tx
		err := db.Update(context.Background(), func(tx *persistence.Tx) (err error) {
			atx = tx
			c := &Context{ctx: context.Background(), part: p, tx: tx}
			defer func() {
				c.end()
				if v := recover(); v != nil {
					err = &PanicError{Path: p.path, Value: v}
				}
			}()
			err = act.Activate(c)
			out = c.out
			return err
		})
		if err != nil {
			db.Close()
			return fmt.Errorf("%w: %s: activate: %w", ErrActivation, p.path, err)
		}
		wrote = wrote || atx.Wrote()
		p.afterSync(func(err error) {
			if err != nil {
				p.logger().Error("messages sent by Activate dropped", "err", err)
				return
			}
			for _, e := range out {
				p.sys.dispatch(e)
			}
		})
	}
	p.db, p.handler = db, h
	p.ob.reset() // a restarted part's outbox state was stopped with it
	tables, err := p.runtimeTables()
	if err != nil {
		p.logger().Error("reading the runtime's tables", "err", err)
	}
	if tables[alarmsTable] {
		p.registerAlarms()
	}
	if tables[outboxTable] || tables[inboxTable] {
		if err := p.activateOutbox(tables[outboxTable]); err != nil {
			p.logger().Error("durable messages", "err", err) // the alarm index wakes it again
		}
	}
	if p.sys.barrier != nil && (wrote || p.unsynced.Load() > 0 || p.parent.unsynced.Load() > 0 || p.sys.stoppedUnsynced(p.path)) {
		// The file, its migrations and Activate's writes were committed
		// without a sync, or the parent's record of p, or the last commits
		// of p before a restart or passivation, may still wait for theirs: what the
		// first replies read waits for one. A file opened as it was, whose
		// last writer and parent have nothing waiting for a sync, is
		// durable as it is.
		p.afterSync(func(error) {})
	}
	p.logger().Debug("part activated", "kind", p.kind.Name, "version", db.Version())
	return nil
}

// noteStopped remembers p, stopped, while commits of its still wait for
// the barrier, so that its next incarnation's first replies wait too.
func (s *System) noteStopped(p *part) {
	if p.kind != nil && p.unsynced.Load() > 0 {
		s.stoppedParts.Store(p.path.String(), p)
		if p.unsynced.Load() == 0 { // synced meanwhile
			s.stoppedParts.CompareAndDelete(p.path.String(), p)
		}
	}
}

// synced forgets p once none of its commits waits for the barrier.
func (s *System) synced(p *part) {
	s.stoppedParts.CompareAndDelete(p.path.String(), p)
}

// stoppedUnsynced reports whether a stopped incarnation of the part at
// path has commits still waiting for the barrier.
func (s *System) stoppedUnsynced(path Path) bool {
	v, ok := s.stoppedParts.Load(path.String())
	return ok && v.(*part).unsynced.Load() > 0
}

// afterSync runs fn once what p committed so far is durable: at once
// without a barrier, after the barrier's next sync with one. Until then p's
// later commits wait for the barrier too, even those that write nothing.
func (p *part) afterSync(fn func(error)) {
	if p.sys.barrier == nil {
		fn(nil)
		return
	}
	p.unsynced.Add(1)
	var handed time.Time
	m := p.sys.metrics
	if m != nil {
		handed = time.Now()
	}
	p.sys.barrier.After(func(err error) {
		if m != nil {
			m.barrierWait.Observe(time.Since(handed).Seconds())
		}
		if p.unsynced.Add(-1) == 0 {
			p.sys.synced(p)
		}
		if p.deferred.Swap(false) {
			p.post(flushBatch{})
		}
		fn(err)
	})
}

// newHandler calls the kind's constructor, turning a panic into an error:
// a part that cannot be activated answers its messages with that error.
func (p *part) newHandler() (h Handler, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Path: p.path, Value: v}
		}
	}()
	return p.kind.handler(p.path), nil
}

// closeDB closes p's file. A part that stops while the system runs
// (passivated, restarted, stopped with its parent) is likely to be activated
// again: its file keeps its write-ahead log and index, so that the next
// activation neither creates them again nor syncs a new log header (see
// persistence.DB.CloseKeepLog). Once System.Close has begun, and for the
// root file, the file is left whole: the database file alone holds the data.
func (p *part) closeDB() {
	if p.db == nil {
		return
	}
	p.sys.inflight.mu.Lock()
	closing := p.sys.inflight.closing
	p.sys.inflight.mu.Unlock()
	closeFile := p.db.CloseKeepLog
	if closing || p.kind == nil {
		closeFile = p.db.Close
	}
	if err := closeFile(); err != nil {
		p.logger().Error("closing part file", "err", err)
	}
	p.db, p.handler = nil, nil
}

// A batch is the open transaction of a part and what waits for its commit.
type batch struct {
	path    Path
	tx      *persistence.Tx
	start   time.Time
	n       int         // messages handled in it
	replies []heldReply // released after the commit (the output gate)
	out     []*envelope // sent after the commit

	sends   [][]outRow // durable deliveries (rows of one lane each, which they hold), sent once it is durable
	settled []string   // lanes p holds whose attempt's outcome this batch recorded (see outbox.failed)
	fresh   []outRow   // durable messages it stored: sent once it is durable, when their lanes are free
	part    *part

	minFresh, maxFresh int64 // the outbox rows it stored, 0 if none (see sendDurableNow)
	runtime            int   // of n, the runtime's own messages (see holdRuntime)

	rolledBack bool         // its only message failed: nothing to commit
	after      []func()     // run once the batch is durable (alarm index updates)
	km         *kindMetrics // nil without metrics
}

type heldReply struct {
	env     *envelope
	val     any
	err     error
	outcome outcome // for fractal_messages_total
	runtime bool    // the runtime's own message: not counted as a message
}

// handle runs env's message in the part's open batch transaction, under a
// savepoint of its own, beginning the transaction if none is open. Its reply
// and the messages it sends are held until the batch commits (see commit).
func (p *part) handle(env *envelope) {
	if err := env.ctx.Err(); err != nil {
		p.countMessage(outCanceled)
		p.sys.finish(env, nil, err) // the caller gave up before we began
		return
	}
	if p.db == nil {
		if err := p.openWaiting(env.ctx); err != nil {
			p.logger().Warn("activation failed", "err", err)
			p.setLastError(err.Error())
			p.countMessage(outActivationError)
			p.sys.finish(env, nil, err)
			return
		}
	}
	first := p.batch == nil
	if first {
		tx, err := p.db.Begin(context.Background())
		if err != nil {
			p.countMessage(outActivationError)
			p.sys.finish(env, nil, fmt.Errorf("actors: %s: begin: %w", p.path, err))
			return
		}
		p.batch = &batch{path: p.path, part: p, tx: tx, start: time.Now()}
	}
	b := p.batch
	b.n++
	switch m := env.msg.(type) {
	case outboxPump, outboxResult, deadLetterOp, childCreated:
		p.runOutbox(env, b, m)
		return
	case alarmWake:
		if m.Name == outboxAlarm {
			p.runOutbox(env, b, m)
			return
		}
	}
	// The first message of a batch needs no savepoint: if it fails, the
	// whole transaction, which holds nothing else, is rolled back. An
	// alarm's delivery always has one: its failure must still record the
	// retry in the transaction.
	wake, isWake := env.msg.(alarmWake)
	if d, ok := env.msg.(*delivery); ok {
		p.handleDelivery(env, b, d) // a savepoint per message
		return
	}
	var sp *persistence.Savepoint
	if !first || isWake {
		var err error
		if sp, err = b.tx.Savepoint(); err != nil {
			b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
			return
		}
	}
	msg := env.msg
	var alarm Alarm
	if isWake {
		due, attempt, err := p.readAlarm(b.tx, wake.Name)
		if err != nil || due.IsZero() || due.After(time.Now()) {
			// Nothing due: the index entry was early or stale; settle it
			// on the part's own truth once this batch has committed.
			if rerr := sp.Release(); err == nil {
				err = rerr
			}
			if err == nil {
				b.after = append(b.after, func() { p.settleAlarm(wake.Name, due) })
			}
			o := outOK
			if err != nil {
				o = outError
			}
			b.hold(env, nil, err, o)
			return
		}
		alarm = Alarm{Name: wake.Name, Due: due, Attempt: attempt}
		msg = alarm
	}
	c, reply, perr, err := p.run(env, b, msg)
	if perr != nil || err != nil {
		var rerr error
		if sp != nil {
			rerr = sp.Rollback()
		} else {
			rerr = b.tx.Rollback()
			b.rolledBack = true
		}
		if rerr != nil {
			p.logger().Error("rollback", "err", rerr) // a savepoint's: the commit will fail and say so
		}
	}
	if isWake {
		failed := perr != nil || err != nil
		if m := p.sys.metrics; m != nil {
			outcome := "ok"
			if failed {
				outcome = "error"
			}
			m.alarmDeliveries.WithLabelValues(p.kind.Name, outcome).Inc()
			m.alarmLateness.Observe(time.Since(alarm.Due).Seconds())
		}
		due, aerr := p.alarmAfterDelivery(b.tx, alarm, failed)
		if aerr != nil {
			p.logger().Error("alarm bookkeeping", "alarm", alarm.Name, "err", aerr) // the index lease retries it
		} else {
			b.after = append(b.after, func() { p.settleAlarm(alarm.Name, due) })
		}
	}
	switch {
	case perr != nil:
		// Commit the rest of the batch, then fail: the panic reaches
		// protoactor-go, which suspends the mailbox and asks the parent
		// to decide.
		b.hold(env, nil, perr, outPanic)
		p.commit()
		// protoactor-go will not call MessageReceived for a message
		// whose Receive panicked: take it off the count here.
		p.queued.Add(-1)
		p.current = nil
		panic(perr)
	case err != nil:
		b.hold(env, nil, err, outError)
		if b.rolledBack {
			p.commit() // nothing left to commit: end the batch
		}
	default:
		if sp != nil {
			if err := sp.Release(); err != nil {
				b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
				return
			}
		}
		b.hold(env, reply, nil, outOK)
		b.out = append(b.out, c.out...)
		b.fresh = append(b.fresh, c.durables...)
	}
}

func (b *batch) hold(env *envelope, val any, err error, o outcome) {
	b.replies = append(b.replies, heldReply{env, val, err, o, false})
}

// holdRuntime is hold for a message of the runtime's own (durable
// delivery bookkeeping, dead-letter operations, a child's news): it is not
// counted in Stats.Messages nor in fractal_messages_total.
func (b *batch) holdRuntime(env *envelope, val any, err error, o outcome) {
	b.replies = append(b.replies, heldReply{env, val, err, o, true})
	b.runtime++
}

// commit commits the open batch, if any, and releases what it held: at
// once when the commit is durable by itself (PowerLossPerCommit,
// ProcessCrash) or wrote nothing new, after the shared barrier's next sync
// otherwise. A failed commit turns every reply of the batch into an error
// and sends nothing.
func (p *part) commit() {
	b := p.batch
	if b == nil {
		return
	}
	p.batch = nil
	km := p.km()
	b.km = km
	var err error
	if fence := p.sys.opts.Fence; fence != nil && !b.rolledBack {
		if err = fence(p.path); err != nil {
			if rerr := b.tx.Rollback(); rerr != nil {
				p.logger().Error("rollback", "err", rerr)
			}
			b.rolledBack = true
			err = fmt.Errorf("%w: %w", ErrFenced, err)
		}
	}
	if !b.rolledBack {
		var start time.Time
		if km != nil {
			start = time.Now()
		}
		err = b.tx.Commit()
		p.sys.commits.Add(1)
		if km != nil {
			now := time.Now()
			km.commitTime.Observe(now.Sub(start).Seconds())
			km.batchSize.Observe(float64(b.n))
			if err == nil && b.tx.Wrote() && now.Sub(p.statAt) >= fileStatInterval {
				p.statFiles(now)
			}
		}
	}
	p.sys.messages.Add(uint64(b.n - b.runtime))
	if hook := p.sys.opts.Committed; hook != nil && err == nil && !b.rolledBack && b.tx.Wrote() {
		if herr := hook(Commit{Path: p.path, File: p.path.File(p.sys.dir), Messages: b.n}); herr != nil {
			err = fmt.Errorf("after the commit: %w", herr)
		}
	}
	if err != nil {
		err = fmt.Errorf("actors: %s: %w", p.path, err)
		p.logger().Error("commit failed", "messages", b.n, "err", err)
		b.release(p.sys, err, outCommitError)
		return
	}
	barrier := p.sys.barrier
	if barrier == nil {
		b.release(p.sys, nil, outOK)
		return
	}
	wrote := !b.rolledBack && b.tx.Wrote()
	if !wrote && p.unsynced.Load() == 0 {
		// Nothing of p's is waiting to be synced: what these replies
		// read is already durable.
		b.release(p.sys, nil, outOK)
		return
	}
	var handed time.Time
	if km != nil {
		handed = time.Now()
	}
	// Even a batch that wrote nothing waits when an earlier commit of p
	// is not synced yet: its replies may have read that commit's writes.
	// Callbacks run in order, so it is released after that commit.
	if wrote {
		p.unsynced.Add(1)
	}
	barrier.After(func(err error) {
		if wrote {
			if p.unsynced.Add(-1) == 0 { // synced: what comes after need not wait
				p.sys.synced(p)
			}
		}
		if p.deferred.Swap(false) {
			p.post(flushBatch{})
		}
		if km != nil {
			p.sys.metrics.barrierWait.Observe(time.Since(handed).Seconds())
		}
		if err != nil {
			err = fmt.Errorf("actors: %s: %w", p.path, err)
		}
		b.release(p.sys, err, outSyncError)
	})
}

// release answers the held replies and sends the held messages, or, when
// err is not nil, answers every reply with err and sends nothing; the
// messages whose handlers succeeded then count as failed with outcome.
func (b *batch) release(s *System, err error, failed outcome) {
	if fence := s.opts.Fence; fence != nil && err == nil {
		if ferr := fence(b.path); ferr != nil {
			err, failed = fmt.Errorf("%w: %w", ErrFenced, ferr), outCommitError
		}
	}
	if err == nil {
		for _, out := range b.out {
			s.dispatch(out)
		}
		for _, fn := range b.after {
			fn()
		}
		if b.maxFresh > 0 && b.maxFresh > b.part.durableOut.Load() {
			b.part.durableOut.Store(b.maxFresh) // releases run in commit order
		}
		if len(b.sends) > 0 || len(b.settled) > 0 {
			b.part.ob.succeeded()
		}
		for _, rows := range b.sends {
			b.part.send(rows)
		}
		for _, r := range b.fresh {
			if !r.behind && b.part.ob.claim(&r) {
				b.part.send([]outRow{r})
			} // else it follows the older messages of its lane, when that moves on
		}
	} else {
		// Nothing of this batch happened: the lanes whose deliveries it
		// took or whose outcomes it recorded are pumped again, from the
		// file, after a backoff that grows while batches keep failing
		// (a full disk). Without that they would wait for the alarm
		// index's lease (alarmLease).
		lanes := b.settled
		for _, rows := range b.sends {
			lanes = append(lanes, rows[0].lane())
		}
		b.part.ob.failed(b.part, lanes)
	}
	for _, r := range b.replies {
		if err != nil && r.err == nil {
			r.val, r.err, r.outcome = nil, err, failed
		}
		if b.km != nil && !r.runtime {
			b.km.messages[r.outcome].Inc()
		}
		s.finish(r.env, r.val, r.err)
	}
}

// run runs the handler on msg for env in b's transaction, timed for the
// metrics; the Context it returns has ended.
func (p *part) run(env *envelope, b *batch, msg any) (c *Context, reply any, perr *PanicError, err error) {
	c = &Context{ctx: env.ctx, part: p, tx: b.tx}
	km := p.km()
	var start time.Time
	if km != nil {
		start = time.Now()
	}
	reply, perr, err = p.call(c, msg)
	if km != nil {
		km.handlerTime.Observe(time.Since(start).Seconds())
	}
	c.end()
	return c, reply, perr, err
}

// call runs the handler, turning a panic into a *PanicError.
func (p *part) call(c *Context, msg any) (reply any, perr *PanicError, err error) {
	defer func() {
		if v := recover(); v != nil {
			perr = &PanicError{Path: p.path, Value: v}
		}
	}()
	reply, err = p.handler.Handle(c, msg)
	return reply, nil, err
}

func (p *part) timerCount() int {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	return len(p.timers)
}

// startTimer arms the timer env carries, once its handler committed.
func (p *part) startTimer(env *envelope) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.timersOff || len(p.timers) >= MaxTimers {
		return // the part stopped meanwhile, or raced past the bound
	}
	if p.timers == nil {
		p.timers = make(map[uint64]*time.Timer)
	}
	p.timerSeq++
	id := p.timerSeq
	p.timers[id] = time.AfterFunc(env.delay, func() {
		p.tmu.Lock()
		_, live := p.timers[id]
		delete(p.timers, id)
		p.tmu.Unlock()
		if !live {
			return
		}
		fired := &envelope{to: env.to, from: env.from, msg: env.msg, ctx: env.ctx}
		p.sys.inflight.add()
		if !p.post(fired) {
			p.sys.finish(fired, nil, fmt.Errorf("%w: %s: timer fired after it stopped", ErrNotActive, p.path))
		}
	})
}

// stopTimers cancels p's waiting timers; once p has stopped (final), no
// new one starts.
func (p *part) stopTimers(final bool) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	for id, t := range p.timers {
		t.Stop()
		delete(p.timers, id)
	}
	if final {
		p.timersOff = true
	}
}

// settleAlarm brings the index entry of p's alarm name to what p's file
// says, once that is durable.
func (p *part) settleAlarm(name string, due time.Time) {
	if err := p.sys.alarms.settle(p.path, name, due); err != nil {
		p.logger().Error("alarm index", "alarm", name, "err", err) // the lease sends it again
	}
}

// registerAlarms notes p's alarms in the System's index when p opens, so
// that an index that lost entries (a file restored from a backup, an index
// deleted) heals with every activation.
// queryStrings returns the first column of a query's rows, as strings.
func queryStrings(tx *persistence.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.QueryContext(context.Background(), query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// runtimeTables reports which of the runtime's lazily created tables p's
// file has, in one query: most parts have none, and then activation reads
// nothing more.
func (p *part) runtimeTables() (map[string]bool, error) {
	tables := map[string]bool{}
	err := p.db.View(context.Background(), func(tx *persistence.Tx) error {
		names, err := queryStrings(tx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (?, ?, ?)`, alarmsTable, outboxTable, inboxTable)
		for _, n := range names {
			tables[n] = true
		}
		return err
	})
	return tables, err
}

func (p *part) registerAlarms() {
	type alarm struct {
		name string
		due  int64
	}
	var alarms []alarm
	err := p.db.View(context.Background(), func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT name, due FROM ` + alarmsTable)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a alarm
			if err := rows.Scan(&a.name, &a.due); err != nil {
				return err
			}
			alarms = append(alarms, a)
		}
		return rows.Err()
	})
	for _, a := range alarms {
		if err == nil {
			err = p.sys.alarms.note(p.path, a.name, time.Unix(0, a.due))
		}
	}
	if err != nil {
		p.logger().Error("registering alarms", "err", err)
	}
}

func (p *part) setLastError(msg string) { p.lastErr.Store(&msg) }
