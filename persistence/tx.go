package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errAborted is reported when SQLite rolled the open transaction back on its
// own, after a statement failed.
var errAborted = fmt.Errorf("%w: SQLite rolled the transaction back after a failed statement", ErrTxDone)

// beginMode tells how a transaction starts.
type beginMode int

const (
	modeWrite     beginMode = iota // BEGIN (deferred): see DB.Begin
	modeImmediate                  // BEGIN IMMEDIATE: migrations take the write lock at once
	modeRead                       // BEGIN with PRAGMA query_only set for the duration
)

// Tx is a transaction on a [DB]. It is obtained from [DB.Begin], or passed to
// the callbacks of [DB.Update], [DB.View] and [Migration.Func]. Its methods
// are safe for concurrent use, but statements are executed one at a time.
//
// Statements run with the context given to Begin (or Update, View, Open).
// Rows returned by [Tx.Query] and [Tx.QueryRow] must be consumed before the
// transaction ends: ending it closes them.
type Tx struct {
	db      *DB
	ctx     context.Context // parent context, checked before COMMIT
	stmtCtx context.Context // the context of statements run without one: ctx
	// queryOnly is set when begin turned PRAGMA query_only on for this
	// transaction; ending it turns it off again.
	queryOnly bool
	// managed is set when Update, View or Open own the transaction:
	// Commit and Rollback then refuse to end it.
	managed bool

	// Guarded by db.mu.
	done       bool
	wrote      bool // the commit wrote to the file
	savepoints []*Savepoint
	rows       []*sql.Rows // opened by the Tx; closed when it ends
}

// Savepoint is a nested transaction inside a [Tx], created by
// [Tx.Savepoint]. It ends with [Savepoint.Release] or [Savepoint.Rollback].
type Savepoint struct {
	tx   *Tx
	name string
	done bool // guarded by tx.db.mu
}

// Begin starts a transaction that may write. It is a deferred transaction
// (BEGIN): it takes the file's write lock at its first write, so a
// transaction that only reads never takes it, and its commit writes nothing
// and syncs nothing (see [Tx.Wrote]). A file is meant to have one writing
// DB; should another connection hold the write lock, the first write waits
// for it up to the busy timeout. Only one transaction is open at a
// time: Begin waits for the current one to end, or for ctx to be done. The
// caller must end the returned Tx with [Tx.Commit] or [Tx.Rollback]; until
// then every other transaction of the DB waits. The statements of the Tx
// run with ctx: once it is done they fail, and Commit rolls back.
func (db *DB) Begin(ctx context.Context) (*Tx, error) {
	return db.begin(ctx, modeWrite, false)
}

func (db *DB) begin(ctx context.Context, mode beginMode, managed bool) (*Tx, error) {
	if err := db.acquire(ctx); err != nil {
		return nil, wrapAcquire("begin", err)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		db.release()
		return nil, ErrClosed
	}

	// A read-only DB has query_only set for good; on a read-write DB a
	// read transaction sets it for its duration, so that a write in View
	// fails instead of being silently discarded.
	queryOnly := mode == modeRead && !db.readOnly
	stmt := "BEGIN"
	if mode == modeImmediate && !db.readOnly {
		stmt = "BEGIN IMMEDIATE"
	}
	if queryOnly {
		if _, err := db.execLocked(ctx, "PRAGMA query_only = 1"); err != nil {
			db.release()
			return nil, fmt.Errorf("persistence: begin %s: %w", db.path, db.classify(err))
		}
	}
	if _, err := db.execLocked(ctx, stmt); err != nil {
		if queryOnly {
			_, _ = db.execLocked(context.Background(), "PRAGMA query_only = 0")
		}
		db.release()
		return nil, fmt.Errorf("persistence: begin %s: %w", db.path, db.classify(err))
	}
	db.aborted.Store(false)
	db.wrote.Store(false)

	tx := &Tx{db: db, ctx: ctx, stmtCtx: ctx, queryOnly: queryOnly, managed: managed}
	db.cur = tx
	return tx, nil
}

// Update runs fn in a write transaction. It commits when fn returns nil and
// rolls back when fn returns an error (returned as is, joined with a
// rollback error if any) or panics (the panic is propagated after the
// rollback). fn must not call [Tx.Commit] or [Tx.Rollback]. A failed
// commit returns an error wrapping [ErrCommit].
func (db *DB) Update(ctx context.Context, fn func(tx *Tx) error) error {
	tx, err := db.begin(ctx, modeWrite, true)
	if err != nil {
		return err
	}
	return tx.run(fn, true)
}

// View runs fn in a read transaction, which is always rolled back. Writes
// inside fn fail (PRAGMA query_only is set for its duration). fn's error is
// returned as is; a panic in fn is propagated after the rollback.
func (db *DB) View(ctx context.Context, fn func(tx *Tx) error) error {
	tx, err := db.begin(ctx, modeRead, true)
	if err != nil {
		return err
	}
	return tx.run(fn, false)
}

// run calls fn and ends the transaction: commit if commit is set and fn
// succeeded, rollback otherwise (including on panic or runtime.Goexit).
func (tx *Tx) run(fn func(tx *Tx) error, commit bool) error {
	finished := false
	defer func() {
		if finished {
			return
		}
		p := recover()
		_ = tx.end(false)
		if p != nil {
			panic(p)
		}
	}()
	err := fn(tx)
	finished = true
	if err != nil {
		if rbErr := tx.end(false); rbErr != nil && !errors.Is(rbErr, ErrTxDone) {
			return errors.Join(err, rbErr)
		}
		return err
	}
	return tx.end(commit)
}

// usableLocked reports why tx cannot run a statement, or nil.
func (tx *Tx) usableLocked() error {
	if tx.db.closed.Load() {
		return ErrClosed
	}
	if tx.done {
		return ErrTxDone
	}
	if tx.db.aborted.Load() {
		return errAborted
	}
	return nil
}

// Exec executes a statement in the transaction.
func (tx *Tx) Exec(query string, args ...any) (sql.Result, error) {
	return tx.ExecContext(tx.stmtCtx, query, args...)
}

// ExecContext is Exec with a context of its own for this statement, which
// is interrupted when ctx is done. Use it when one transaction serves
// several callers, each with its own deadline.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	if err := tx.usableLocked(); err != nil {
		return nil, err
	}
	return tx.db.execLocked(ctx, query, args...)
}

// Query executes a query in the transaction. The rows must be closed (or
// read to the end) before the transaction ends; ending it closes them.
func (tx *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	return tx.QueryContext(tx.stmtCtx, query, args...)
}

// QueryContext is Query with a context of its own: the rows are closed
// when ctx is done, and must be closed before the transaction ends.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	if err := tx.usableLocked(); err != nil {
		return nil, err
	}
	return tx.queryLocked(ctx, query, args...)
}

// queryLocked runs a query through the statement cache and tracks its rows,
// which end closes synchronously: a cached statement must not be closed, or
// its rows closed later by database/sql, while rows of it are open.
func (tx *Tx) queryLocked(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := tx.db.stmtLocked(query)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, tx.db.classify(err)
	}
	tx.rows = append(tx.rows, rows)
	return rows, nil
}

// QueryRow executes a query expected to return at most one row. Errors,
// including [ErrTxDone] and [ErrClosed], are reported by the returned row's
// Scan and Err methods.
func (tx *Tx) QueryRow(query string, args ...any) *Row {
	return tx.QueryRowContext(tx.stmtCtx, query, args...)
}

// QueryRowContext is QueryRow with a context of its own.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *Row {
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	if err := tx.usableLocked(); err != nil {
		return ErrRow(err)
	}
	rows, err := tx.queryLocked(ctx, query, args...)
	return &Row{rows: rows, err: err}
}

// Row is the result of [Tx.QueryRow], used like database/sql's Row.
type Row struct {
	rows *sql.Rows
	err  error
}

// Scan copies the columns of the first row into dest and closes the row. It
// returns sql.ErrNoRows when the query returned no row.
func (r *Row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return classify(err)
		}
		return sql.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	return r.rows.Close()
}

// Err returns the error of the query, if any, without scanning.
func (r *Row) Err() error { return r.err }

// ErrRow returns a Row whose Scan and Err report err, for code that wraps
// a Tx and refuses a query before running it.
func ErrRow(err error) *Row { return &Row{err: err} }

// Savepoint opens a savepoint: a nested transaction whose changes can be
// undone ([Savepoint.Rollback]) without ending tx, or kept
// ([Savepoint.Release]). Savepoints nest; ending one ends the ones opened
// after it.
func (tx *Tx) Savepoint() (*Savepoint, error) {
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	if err := tx.usableLocked(); err != nil {
		return nil, err
	}
	// Named by nesting depth: successive savepoints reuse the same few
	// names (and cached statements); nested ones differ, so ROLLBACK TO
	// and RELEASE always find the right one.
	sp := &Savepoint{tx: tx, name: savepointName(len(tx.savepoints) + 1)}
	if err := tx.ctx.Err(); err != nil {
		return nil, fmt.Errorf("persistence: savepoint: %w", err)
	}
	if _, err := tx.db.execLocked(context.Background(), "SAVEPOINT "+sp.name); err != nil {
		return nil, fmt.Errorf("persistence: savepoint: %w", err)
	}
	tx.savepoints = append(tx.savepoints, sp)
	return sp, nil
}

// savepointNames are the names of the first savepoints of a transaction,
// made once so that opening a savepoint allocates no name.
var savepointNames = func() (names [64]string) {
	for i := range names {
		names[i] = "persistence_sp" + strconv.Itoa(i)
	}
	return names
}()

func savepointName(seq int) string {
	if seq < len(savepointNames) {
		return savepointNames[seq]
	}
	return "persistence_sp" + strconv.Itoa(seq)
}

// Release ends the savepoint keeping its changes in the transaction; they
// are persisted when the transaction commits.
func (sp *Savepoint) Release() error {
	return sp.end("RELEASE " + sp.name)
}

// Rollback undoes the changes made since the savepoint was opened and ends
// it (ROLLBACK TO, then RELEASE). The transaction stays open.
func (sp *Savepoint) Rollback() error {
	return sp.end("ROLLBACK TO "+sp.name, "RELEASE "+sp.name)
}

func (sp *Savepoint) end(stmts ...string) error {
	tx := sp.tx
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	if err := tx.usableLocked(); err != nil {
		return err
	}
	if sp.done {
		return ErrTxDone
	}
	for _, stmt := range stmts {
		if _, err := tx.db.execLocked(context.Background(), stmt); err != nil {
			return fmt.Errorf("persistence: savepoint: %w", err)
		}
	}
	for i := len(tx.savepoints) - 1; i >= 0; i-- {
		s := tx.savepoints[i]
		s.done = true
		tx.savepoints = tx.savepoints[:i]
		if s == sp {
			break
		}
	}
	return nil
}

// Commit commits the transaction. If COMMIT fails (deferred foreign key
// violation, disk full, I/O error...) or the context given to Begin is
// done, the transaction is rolled back and the error, wrapping [ErrCommit],
// returned; the DB stays usable. After the Tx ended, Commit returns
// [ErrTxDone].
func (tx *Tx) Commit() error {
	if tx.managed {
		return ErrTxManaged
	}
	return tx.end(true)
}

// Wrote reports whether the transaction's Commit wrote to the file. A
// transaction that only read commits without writing the log and syncs
// nothing; with [SyncNormal] and a [Barrier], only a commit that wrote has
// to wait for the barrier.
//
// SQLite decides: Wrote is true when the transaction held the write lock at
// COMMIT, which it takes at its first write statement (even one that
// changed no row, or that a savepoint later undid). It is false before
// Commit and after a failed Commit.
func (tx *Tx) Wrote() bool {
	tx.db.mu.Lock()
	defer tx.db.mu.Unlock()
	return tx.wrote
}

// Rollback aborts the transaction, discarding its changes. After the Tx
// ended, Rollback returns [ErrTxDone].
func (tx *Tx) Rollback() error {
	if tx.managed {
		return ErrTxManaged
	}
	return tx.end(false)
}

// end commits or rolls back tx and releases the connection.
func (tx *Tx) end(commit bool) error {
	db := tx.db
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if tx.done {
		return ErrTxDone
	}
	defer db.finishLocked(tx)

	if !commit {
		if err := db.rollbackLocked(); err != nil {
			return fmt.Errorf("persistence: rollback %s: %w", db.path, err)
		}
		return nil
	}
	if db.aborted.Load() {
		return fmt.Errorf("%w: %s: %w", ErrCommit, db.path, errAborted)
	}
	if err := tx.ctx.Err(); err != nil {
		return errors.Join(fmt.Errorf("%w: %s: %w", ErrCommit, db.path, err), db.rollbackLocked())
	}
	// COMMIT runs without the caller's context: interrupting it half way
	// gains nothing, the decision to commit has been taken.
	if _, err := db.execLocked(context.Background(), "COMMIT"); err != nil {
		// SQLite keeps the transaction open when COMMIT fails on a
		// deferred constraint or SQLITE_BUSY; roll it back.
		return errors.Join(fmt.Errorf("%w: %s: %w", ErrCommit, db.path, db.classify(err)), db.rollbackLocked())
	}
	tx.wrote = db.wrote.Load()
	return nil
}

// rollbackLocked rolls back the open transaction, if SQLite has not already
// done it.
func (db *DB) rollbackLocked() error {
	if db.aborted.Load() {
		return nil
	}
	_, err := db.execLocked(context.Background(), "ROLLBACK")
	if err != nil && sqliteCode(err) == sqliteError && strings.Contains(err.Error(), "no transaction is active") {
		return nil
	}
	return err
}

// finishLocked marks tx ended, closes its rows and frees the connection.
func (db *DB) finishLocked(tx *Tx) {
	for _, r := range tx.rows {
		_ = r.Close()
	}
	tx.rows = nil
	db.closeRetiredLocked()
	tx.done = true
	for _, sp := range tx.savepoints {
		sp.done = true
	}
	tx.savepoints = nil
	if tx.queryOnly {
		_, _ = db.execLocked(context.Background(), "PRAGMA query_only = 0")
	}
	if db.cur == tx {
		db.cur = nil
	}
	db.release()
}
