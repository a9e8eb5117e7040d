package actors

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// The parent's side of a deletion (see delete.go): its tombstones, the
// removal of its deleted children's files, and its refusal to activate
// them.
const (
	// deletedTable lists, in a parent's file (the root file for the
	// top-level parts), its deleted children: a message for one of them,
	// or below it, gets ErrNoPart until System.Reuse. pending is 1 until
	// the child's files are removed.
	deletedTable = "_fractal_deleted"

	// deleteAlarm is the runtime's alarm by which a part asked, with
	// Context.Delete, to be deleted.
	deleteAlarm = reservedAlarmPrefix + "delete"

	// trashPrefix starts the name, in its parent's directory, under which
	// a deleted child's directory is removed (see trashName).
	trashPrefix = "_deleted."
)

// trashName is the directory a deleted part's directory is renamed to
// before it is removed: in its parent's directory, a name that starts
// with '_' (the runtime's, which tools skip), of fixed length whatever the
// segment's (a hash of it), the same at every attempt.
func (s *System) trashName(p Path) string {
	sum := sha256.Sum256([]byte(p.Name()))
	return filepath.Join(filepath.Dir(p.Dir(s.dir)), trashPrefix+hex.EncodeToString(sum[:16]))
}

// removeFiles removes the directory of the deleted part p, its subtree's:
// renamed first, atomically, so that what remains of a removal
// interrupted by a crash is only ever under the trash name; then the
// parent's directory is synced (with the durabilities that survive a power
// loss), so that the tombstone is marked done only once the removal is
// durable: a deleted file must never come back under a live path.
func (s *System) removeFiles(p Path) error {
	dir, trash := p.Dir(s.dir), s.trashName(p)
	if err := os.RemoveAll(trash); err != nil { // left by an interrupted removal
		return fmt.Errorf("actors: removing %s: %w", trash, err)
	}
	switch err := os.Rename(dir, trash); {
	case err == nil:
		s.deletes.step("renamed")
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("actors: removing %s: %w", dir, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("actors: removing %s: %w", trash, err)
	}
	if s.opts.Durability == ProcessCrash {
		return nil
	}
	return syncDir(filepath.Dir(dir))
}

// parentHasFile reports whether the parent of p has a file: if not, p
// never existed.
func (s *System) parentHasFile(p Path) bool {
	file := filepath.Join(s.dir, rootFileName)
	if pp := p.Parent(); !pp.IsRoot() {
		file = pp.File(s.dir)
	}
	_, err := os.Stat(file)
	return err == nil
}

// tombstoneTx notes p's child seg as deleted, files pending, and removes
// p's records of it, in tx. The first deletion of p's life installs the
// table (compDeleted); a parent has the records' tables from its
// activation (wantedComponents).
func (p *part) tombstoneTx(tx *persistence.Tx, seg string) error {
	bg := context.Background()
	if err := p.install(tx, compDeleted); err != nil {
		return err
	}
	if _, err := tx.ExecContext(bg, `INSERT INTO `+deletedTable+` (name, at, pending) VALUES (?, ?, 1)
		ON CONFLICT (name) DO UPDATE SET at = excluded.at, pending = 1`, seg, p.sys.clock.Now().UnixNano()); err != nil {
		return err
	}
	for _, table := range []string{childrenTable, createdTable} {
		if _, err := tx.ExecContext(bg, `DELETE FROM `+table+` WHERE name = ?`, seg); err != nil {
			return err
		}
	}
	return nil
}

// errChildStopping: the child a tombstone is for is still among its
// parent's active children: it has stopped, but its parent has not been
// told yet (protoactor-go tells a stop's waiters before the parent), or a
// group restart started it again. The deletion stops it again and asks
// again.
var errChildStopping = errors.New("actors: child still stopping")

// forgetChild takes p's child seg out of the group restart under way, if
// any, so that it is not started again; checks, on p's goroutine, that the
// child is not active; and removes it from p's supervisor: a deleted child
// is never restarted. Messages the plan holds for it are routed when the
// plan ends, and refused then.
func (p *part) forgetChild(seg string) error {
	if plan := p.kids.plan; plan != nil {
		plan.start = slices.DeleteFunc(plan.start, func(id string) bool { return id == seg })
	}
	if p.kids.active[seg] != nil {
		return fmt.Errorf("%w: %s", errChildStopping, seg)
	}
	if p.kids.sup != nil {
		_ = p.kids.sup.Remove(seg) // forgotten already when it stopped
	}
	return nil
}

// Runtime messages of a deletion, handled by the parent in its batch
// transaction (the guardian runs the same on its goroutine: onGuardian).
type (
	tombstone     struct{ seg string } // step 4
	tombstoneDone struct{ seg string } // the files are removed
	reuseChild    struct{ seg string } // System.Reuse
)

func (m tombstone) runIn(p *part, env *envelope, b *batch) {
	p.runRuntime(env, b, func() (any, error) {
		if err := p.forgetChild(m.seg); err != nil {
			return nil, err
		}
		return nil, p.tombstoneTx(b.tx, m.seg)
	})
}

func (m tombstoneDone) runIn(p *part, env *envelope, b *batch) {
	p.runRuntime(env, b, func() (any, error) { return nil, markRemoved(b.tx, m.seg) })
}

func (m reuseChild) runIn(p *part, env *envelope, b *batch) {
	p.runRuntime(env, b, func() (any, error) { return nil, p.reuseTx(b.tx, m.seg) })
}

// runRuntime runs fn, a runtime message's work, in b's transaction under a
// savepoint, and holds its outcome as a runtime reply.
func (p *part) runRuntime(env *envelope, b *batch, fn func() (any, error)) {
	sp, err := b.tx.Savepoint()
	if err != nil {
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	val, err := fn()
	if err == nil {
		err = sp.Release()
	} else {
		err = errors.Join(err, sp.Rollback())
	}
	if err != nil {
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	b.holdRuntime(env, val, nil, outOK)
}

// tombstone commits step 4 in the parent of p and waits until it is
// durable. It reports false, and does nothing, when the parent has no file
// (p never existed). An error wrapping errChildStopping means that the
// parent still counts p among its active children.
func (s *System) tombstone(ctx context.Context, p Path) (bool, error) {
	if !s.parentHasFile(p) {
		return false, nil
	}
	seg := p.Name()
	if !p.Parent().IsRoot() {
		if _, err := s.ask(ctx, p.Parent(), tombstone{seg}); err != nil {
			return false, fmt.Errorf("actors: delete %s: %w", p, err)
		}
		return true, nil // the reply waited for the commit to be durable
	}
	err := s.onGuardian(ctx, func(g *part) error {
		if err := g.forgetChild(seg); err != nil {
			return err
		}
		db, err := g.childrenDB()
		if err != nil {
			return err
		}
		return db.Update(context.Background(), func(tx *persistence.Tx) error { return g.tombstoneTx(tx, seg) })
	})
	if err == nil && s.barrier != nil {
		err = s.barrier.Wait(ctx)
	}
	if err != nil {
		return false, fmt.Errorf("actors: delete %s: %w", p, err)
	}
	return true, nil
}

// tombstoneDone marks the tombstone of p done: its files are removed.
func (s *System) tombstoneDone(ctx context.Context, p Path) error {
	seg := p.Name()
	if !p.Parent().IsRoot() {
		_, err := s.ask(ctx, p.Parent(), tombstoneDone{seg})
		return err
	}
	return s.onGuardian(ctx, func(g *part) error {
		db, err := g.childrenDB()
		if err != nil {
			return err
		}
		return db.Update(context.Background(), func(tx *persistence.Tx) error { return markRemoved(tx, seg) })
	})
}

func markRemoved(tx *persistence.Tx, seg string) error {
	_, err := tx.ExecContext(context.Background(), `UPDATE `+deletedTable+` SET pending = 0 WHERE name = ?`, seg)
	return err
}

// Reuse lets the path of a deleted part be used again: its next message
// activates a new part there, with a new, empty file. Until then every
// message to it gets ErrNoPart. Reusing a path that is not deleted does
// nothing. A path being deleted is refused with ErrDraining, one that
// another node serves with ErrRemotePart; from a handler whose call path
// holds the parent, which lifts the tombstone, with ErrCallCycle.
//
// A deleted path stays deleted until Reuse, however long, rather than for
// a while: a late message (a caller's retry, a durable message redriven
// from a dead letter, a stale link) then fails loudly instead of quietly
// creating an empty part, and the parent keeps one row per deleted child
// where it kept one per child.
func (s *System) Reuse(ctx context.Context, path string) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	if !s.servedHere(p) {
		return fmt.Errorf("actors: reuse: %w: %s", ErrRemotePart, p)
	}
	if err := checkDelete(ctx, p, false); err != nil {
		return err
	}
	ctx, done, err := s.deletes.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	if s.deleting(p) {
		return fmt.Errorf("actors: reuse: %w: %s is being deleted", ErrDraining, p)
	}
	if !s.parentHasFile(p) {
		return nil // nothing was ever deleted there
	}
	seg := p.Name()
	if p.Parent().IsRoot() {
		return s.onGuardian(ctx, func(g *part) error {
			db, err := g.childrenDB()
			if err == nil {
				err = db.Update(context.Background(), func(tx *persistence.Tx) error { return g.reuseTx(tx, seg) })
			}
			return err
		})
	}
	_, err = s.ask(ctx, p.Parent(), reuseChild{seg})
	if errors.Is(err, ErrNoPart) {
		return nil // an ancestor is deleted
	}
	return err
}

// reuseTx lifts the tombstone of seg, if any, in tx. Whatever is left of
// the deleted child's files is removed first: an old file must not come
// back as the new part's.
func (p *part) reuseTx(tx *persistence.Tx, seg string) error {
	if ok, err := p.has(tx, compDeleted); err != nil || !ok {
		return err
	}
	var pending int
	err := tx.QueryRowContext(context.Background(), `SELECT pending FROM `+deletedTable+` WHERE name = ?`, seg).Scan(&pending)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := p.path.Child(seg)
	if err != nil {
		return err
	}
	if err := p.sys.removeFiles(c); err != nil {
		return err
	}
	if err := p.sys.alarms.dropUnder(c); err != nil {
		return err
	}
	_, err = tx.ExecContext(context.Background(), `DELETE FROM `+deletedTable+` WHERE name = ?`, seg)
	return err
}

// finishDeletes finishes, when a parent opens its file (db, which has
// compDeleted), the deletions of its children that a crash interrupted
// after their tombstones: their files are removed, the alarm index forgets
// them, the tombstones are marked done. Deletions under way in this
// process are theirs to finish. It runs on the parent's goroutine, outside
// any batch.
func (s *System) finishDeletes(db *persistence.DB, parent Path) {
	var names []string
	err := db.View(context.Background(), func(tx *persistence.Tx) (err error) {
		names, err = queryStrings(tx, `SELECT name FROM `+deletedTable+` WHERE pending = 1`)
		return err
	})
	for _, seg := range names {
		if err != nil {
			break
		}
		c, cerr := parent.Child(seg)
		if cerr != nil || s.deleting(c) {
			continue
		}
		if err = s.removeFiles(c); err != nil {
			break
		}
		if err = s.alarms.dropUnder(c); err != nil {
			break
		}
		err = db.Update(context.Background(), func(tx *persistence.Tx) error { return markRemoved(tx, seg) })
	}
	if err != nil {
		s.log.Error("finishing the deletion of a child", "parent", parent.String(), "err", err) // tried again at its next activation
	}
}

// childDeleted reports whether p's child seg is deleted, reading p's
// file: in its open batch, if any. A parent that never deleted a child
// (no compDeleted) reads only its file's header.
func (p *part) childDeleted(seg string) (bool, error) {
	lookup := func(tx *persistence.Tx) (bool, error) {
		if ok, err := p.has(tx, compDeleted); err != nil || !ok {
			return false, err
		}
		var n int
		err := tx.QueryRowContext(context.Background(), `SELECT count(*) FROM `+deletedTable+` WHERE name = ?`, seg).Scan(&n)
		return n > 0, err
	}
	if b := p.batch; b != nil && !b.rolledBack {
		return lookup(b.tx)
	}
	p.commit() // a batch whose only message failed: end it
	db, err := p.childrenDB()
	if err != nil {
		return false, err
	}
	var gone bool
	err = db.View(context.Background(), func(tx *persistence.Tx) (err error) {
		gone, err = lookup(tx)
		return err
	})
	return gone, err
}

// refuseDeleted answers env with ErrNoPart, and reports true, when it
// goes to p's child seg, or below it, and that child is deleted: it is
// not activated, and nothing is created. When p's file cannot be read, the
// child is activated: serving it matters more (as in recordChild).
func (p *part) refuseDeleted(env *envelope, seg string) bool {
	gone, err := p.childDeleted(seg)
	if err != nil {
		p.logger().Error("reading deleted children", "child", seg, "err", err)
		return false
	}
	if !gone {
		return false
	}
	child, err := p.path.Child(seg)
	if err != nil {
		return false
	}
	p.sys.finish(env, nil, noPart(env.to, child))
	return true
}

// deleteWake handles a wake of p's delete alarm (Context.Delete): the
// deletion starts once this batch is durable. A wake without the alarm
// (stale: the path was deleted and reused since) removes the entry.
func (p *part) deleteWake(env *envelope, b *batch) {
	due, _, err := p.readAlarm(b.tx, deleteAlarm)
	switch {
	case err != nil:
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	case due.IsZero():
		b.onDurable = append(b.onDurable, func() { p.settleAlarm(deleteAlarm, time.Time{}) })
	default:
		b.onDurable = append(b.onDurable, func() { p.sys.deleteLater(p.path) })
	}
	b.holdRuntime(env, nil, nil, outOK)
}

// outboxesOnDisk reports whether a part of the subtree at p, all of whose
// parts are stopped, has durable messages in its file's outbox.
func (s *System) outboxesOnDisk(ctx context.Context, p Path) (bool, error) {
	cands, err := s.alarms.under(p, outboxAlarm)
	if err != nil {
		return false, fmt.Errorf("actors: delete %s: alarm index: %w", p, err)
	}
	for _, c := range cands {
		db, err := persistence.Open(ctx, c.File(s.dir), &persistence.Options{ReadOnly: true})
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("actors: delete %s: the outbox of %s: %w", p, c, err)
		}
		var pending bool
		err = db.View(ctx, func(tx *persistence.Tx) error {
			if ok, err := hasTable(tx, outboxTable); err != nil || !ok {
				return err
			}
			return tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM `+outboxTable+`)`).Scan(&pending)
		})
		db.Close()
		if err != nil || pending {
			return pending, err
		}
	}
	return false, nil
}

// under returns the paths at or below p that have an entry name in the
// index. The entries' primary key starts with the path, so this reads the
// subtree's range only.
func (a *alarmIndex) under(p Path, name string) ([]Path, error) {
	var out []Path
	err := a.db.View(context.Background(), func(tx *persistence.Tx) error {
		names, err := queryStrings(tx, `SELECT path FROM alarms WHERE (path = ? OR (path > ? AND path < ?)) AND name = ?`,
			p.s, p.s+"/", p.s+"0", name) // '0' follows '/'
		for _, s := range names {
			if q, err := ParsePath(s); err == nil {
				out = append(out, q)
			}
		}
		return err
	})
	return out, err
}

// dropUnder removes the entries of the paths at or below p.
func (a *alarmIndex) dropUnder(p Path) error {
	return a.db.Update(context.Background(), func(tx *persistence.Tx) error {
		_, err := tx.Exec(`DELETE FROM alarms WHERE path = ? OR (path > ? AND path < ?)`, p.s, p.s+"/", p.s+"0")
		return err
	})
}

// receiverGone settles the attempt of row r whose receiver answered
// ErrNoPart: it is deleted, so r becomes a dead letter at once, not after
// Delivery.MaxAttempts, and leaves its lane (see kill); a skip marker,
// which has no receiver left to tell, is dropped. The rows behind it go
// next, each to the same end.
func (p *part) receiverGone(b *batch, r outRow, attempts int, cause error) error {
	if r.kind != rowSkip {
		return p.kill(b, r, attempts, cause)
	}
	if _, err := b.tx.ExecContext(context.Background(), `DELETE FROM `+outboxTable+` WHERE id = ?`, r.id); err != nil {
		return err
	}
	return p.pump(b, r.lane())
}
