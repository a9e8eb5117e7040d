package actors

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// children are what a part knows of its children: the active ones, the
// messages held for those that are stopping, and the supervision decisions
// about them. Owned by the part's goroutine (protoactor-go runs
// HandleFailure, spawns and Terminated there).
type children struct {
	active  map[string]*part       // by segment
	pending map[string][]*envelope // messages for children that are stopping
	sup     *supervisor.Supervisor // decisions about the children (see supervisorOf)
	plan    *groupPlan             // the group restart under way, if any
}

// restartChild asks a parent to restart one of its children.
type restartChild struct {
	child *part
	done  chan error
}

// spawn starts the child seg; recorded says whether its parent noted that
// its file was created.
func (p *part) spawn(c actor.Context, seg string, recorded bool) *part {
	return p.spawnChild(c, seg, recorded, false)
}

// spawnChild is spawn; an eager child opens its file as soon as it starts
// and tells p (childStarted), as a group restart needs.
func (p *part) spawnChild(c actor.Context, seg string, recorded, eager bool) *part {
	cp, err := p.path.Child(seg)
	if err != nil {
		panic(fmt.Sprintf("actors: routed to invalid child %q of %s: %v", seg, p.path, err)) // paths are validated on entry
	}
	k, err := p.sys.tree.match(cp)
	if err != nil {
		panic(fmt.Sprintf("actors: routed to %s: %v", cp, err)) // kinds are checked on entry
	}
	child := &part{sys: p.sys, path: cp, kind: k, parent: p, recorded: recorded, eager: eager}
	child.sync.parentUnsynced = p.sync.unsynced > 0 // its record in p's file may be among them
	child.pid = c.Spawn(child.props())
	if p.kids.active == nil {
		p.kids.active = make(map[string]*part)
	}
	p.kids.active[seg] = child
	p.gauges.nchildren.Add(1)
	child.gauges.lastActive.Store(p.sys.clock.Now().UnixNano())
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
	// (The tables are there: a part that has children gets them at
	// activation, see wantedComponents.)
	record := func(tx *persistence.Tx) (bool, error) {
		if err := tx.QueryRow(`SELECT count(*) > 0 FROM `+createdTable+` WHERE name = ?`, seg).Scan(&created); err != nil {
			return false, err
		}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM `+childrenTable+` WHERE name = ?`, seg).Scan(&n); err != nil || n > 0 {
			return false, err
		}
		_, err := tx.Exec(`INSERT OR IGNORE INTO `+childrenTable+` (name) VALUES (?)`, seg)
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
			p.handOver(&batch{path: p.path}) // counted until synced: see activate
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
	_, err := b.tx.ExecContext(context.Background(), `INSERT OR IGNORE INTO `+createdTable+` (name) VALUES (?)`, seg)
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
		Sync:  p.sys.opts.Durability.syncMode(),
		Layer: runtimeLayer(p.wantedComponents()),
	})
	if err != nil {
		return nil, err
	}
	p.db, p.schema = db, components(db)
	if p.schema&compDeleted != 0 {
		p.sys.finishDeletes(db, Path{})
	}
	return db, nil
}

func (p *part) childTerminated(c actor.Context, who *actor.PID) {
	for seg, child := range p.kids.active {
		if !child.pid.Equal(who) {
			continue
		}
		delete(p.kids.active, seg)
		p.gauges.nchildren.Add(-1)
		plan := p.kids.plan
		if p.kids.sup != nil && (plan == nil || !slices.Contains(plan.start, seg)) {
			// (A child the plan starts again keeps its place in the
			// start order.)
			_ = p.kids.sup.Remove(seg) // already forgotten after a decision to remove it
		}
		if plan != nil && plan.waiting == seg {
			plan.waiting = ""
		}
		if !p.planHolds(seg) {
			p.releasePending(c, seg)
		}
		p.advancePlan(c)
		return
	}
}

// releasePending routes the messages held for child seg while it stopped.
func (p *part) releasePending(c actor.Context, seg string) {
	held := p.kids.pending[seg]
	delete(p.kids.pending, seg)
	for _, env := range held {
		if p.state == running {
			p.route(c, env)
		} else {
			// Restarting or stopping: queue them behind whatever is in
			// the mailbox; a stopping part reroutes them.
			p.sys.as.Root.Send(c.Self(), env)
		}
	}
}

// failPending reroutes the messages held for children, and those held
// during a restart, when p itself stops.
func (p *part) failPending() {
	for _, env := range p.stash {
		p.gauges.queued.Add(-1)
		p.sys.reroute(env)
	}
	p.stash = nil
	for seg, held := range p.kids.pending {
		delete(p.kids.pending, seg)
		for _, env := range held {
			p.sys.reroute(env)
		}
	}
}

func (m *restartChild) apply(p *part, c actor.Context) { p.restartChild(c, m) }

func (p *part) restartChild(c actor.Context, m *restartChild) {
	child := p.kids.active[m.child.path.Name()]
	if child != m.child || p.state != running {
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
