package actors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

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
		waited, t := p.sys.after(openRetryDelay)
		select {
		case <-waited:
		case <-ctx.Done():
			t.Stop()
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
	fi, err := os.Stat(file)
	existed := err == nil
	if p.recorded && (!existed || fi.Size() == 0) {
		// Its parent noted that its file was created: the file is gone,
		// or empty (truncated, or caught half restored), which SQLite
		// would take for a new database. Starting it empty would lose
		// silently what it acknowledged.
		what := "missing"
		if existed {
			what = "empty"
		}
		return fmt.Errorf("%w: %s: %w (%s): %s (restore it from a backup, or delete the part's row in its parent's %s to start it empty)",
			ErrActivation, p.path, ErrFileMissing, what, file, createdTable)
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
		Layer:      runtimeLayer(p.wantedComponents()),
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrActivation, p.path, err)
	}
	p.schema = components(db)
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
	var out []*envelope // sent by Activate
	if act, ok := h.(Activator); ok {
		var atx *persistence.Tx
		p.pendingC = 0 // what a failed activation left
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
			if err == nil && p.pendingC != 0 {
				// Activate installed some (see install).
				_, p.schema, err = p.txComponents(tx)
			}
			p.pendingC = 0
			return err
		})
		if err != nil {
			db.Close()
			return fmt.Errorf("%w: %s: activate: %w", ErrActivation, p.path, err)
		}
		wrote = wrote || atx.Wrote()
	}
	p.db, p.handler = db, h
	p.ob.reset() // a restarted part's outbox state was stopped with it
	if p.schema&compAlarms != 0 {
		p.registerAlarms()
	}
	if p.schema&(compOutbox|compInbox) != 0 {
		if err := p.activateOutbox(p.schema&compOutbox != 0); err != nil {
			p.logger().Error("durable messages", "err", err) // the alarm index wakes it again
		}
	}
	if p.schema&compDeleted != 0 {
		p.sys.finishDeletes(db, p.path)
	}
	if len(out) > 0 || (p.sys.barrier != nil && (wrote || p.sync.unsynced > 0 || p.sync.parentUnsynced || p.sys.stoppedUnsynced(p.path))) {
		// The file, its migrations and Activate's writes were committed
		// without a sync, or the parent's record of p, or the last commits
		// of p before a restart or passivation, may still wait for theirs:
		// what Activate sent, and what the first replies read, wait for
		// one. A file opened as it was, whose last writer and parent have
		// nothing waiting for a sync, is durable as it is.
		b := &batch{path: p.path}
		p.holdOut(b, out)
		p.handOver(b)
	}
	p.sync.parentUnsynced = false // covered by what was just handed over
	if p.sys.trace != nil {
		p.sys.trace("open", p.path)
	}
	p.logger().Debug("part activated", "kind", p.kind.Name, "version", db.Version())
	return nil
}

// noteStopped remembers, when p stops while commits of its still wait
// for the barrier, that the next incarnation's first replies must wait
// too: until a barrier callback handed over now, which runs after those
// commits' callbacks, closes the mark.
func (s *System) noteStopped(p *part) {
	if p.kind == nil || s.barrier == nil || p.sync.unsynced == 0 {
		return
	}
	key := p.path.String()
	mark := make(chan struct{})
	s.stoppedParts.Store(key, mark)
	s.barrier.After(func(error) {
		close(mark)
		s.stoppedParts.CompareAndDelete(key, mark)
	})
}

// stoppedUnsynced reports whether a stopped incarnation of the part at
// path has commits still waiting for the barrier.
func (s *System) stoppedUnsynced(path Path) bool {
	v, ok := s.stoppedParts.Load(path.String())
	if !ok {
		return false
	}
	select {
	case <-v.(chan struct{}):
		return false
	default:
		return true
	}
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
	if p.sys.trace != nil && p.kind != nil {
		p.sys.trace("close", p.path)
	}
}

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
