package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite"
)

// DefaultBusyTimeout is the busy timeout used when [Options.BusyTimeout] is
// zero: how long a statement waits for a lock held by another connection to
// the same file before failing with SQLITE_BUSY.
const DefaultBusyTimeout = 5 * time.Second

// SyncMode selects how hard SQLite works to make a commit durable. It sets
// PRAGMA synchronous. The zero value is [SyncFull].
type SyncMode int

const (
	// SyncFull (PRAGMA synchronous=FULL) syncs the write-ahead log on every
	// commit: a commit that returned survives a power loss or an operating
	// system crash. It is the default.
	SyncFull SyncMode = iota
	// SyncNormal (PRAGMA synchronous=NORMAL) syncs only at checkpoints: a
	// commit that returned survives a crash of the process, but the last
	// commits may be lost (never corrupted) on power loss.
	SyncNormal
)

// String returns the PRAGMA synchronous value for m: "FULL" or "NORMAL", or
// "SyncMode(n)" for an invalid value.
func (m SyncMode) String() string {
	switch m {
	case SyncFull:
		return "FULL"
	case SyncNormal:
		return "NORMAL"
	default:
		return "SyncMode(" + strconv.Itoa(int(m)) + ")"
	}
}

// Migration is one step of a file's schema history. Migration i of
// [Options.Migrations] brings the schema version (PRAGMA user_version) from
// i to i+1.
type Migration struct {
	// Name identifies the migration in errors.
	Name string
	// SQL is executed when Func is nil. It may hold several statements
	// separated by semicolons.
	SQL string
	// Func, when not nil, performs the migration in Go inside the migration
	// transaction. It must not call [Tx.Commit] or [Tx.Rollback]; returning
	// an error aborts all pending migrations.
	Func func(tx *Tx) error
}

// Options configures [Open]. A nil *Options and the zero value both select
// the defaults: [SyncFull], [DefaultBusyTimeout], no migrations, read-write.
type Options struct {
	// Sync selects the durability of commits (PRAGMA synchronous).
	Sync SyncMode
	// BusyTimeout bounds how long a statement waits for a lock held by
	// another connection (PRAGMA busy_timeout). Zero means
	// [DefaultBusyTimeout]; it must not be negative.
	BusyTimeout time.Duration
	// Migrations is the ordered schema history of the file: migration i
	// brings PRAGMA user_version from i to i+1. Open applies the pending
	// ones and refuses a file whose version is greater than
	// len(Migrations) with an error wrapping [ErrSchemaTooNew].
	Migrations []Migration
	// ReadOnly opens an existing file for reading only: the file must exist
	// (otherwise the error wraps [fs.ErrNotExist]), migrations are not
	// applied, no pragma that writes to the file is issued, and every
	// write fails. If Migrations is not empty, a file whose version is
	// greater than len(Migrations) is still refused with
	// [ErrSchemaTooNew]; a file with pending migrations is opened as is
	// (see [DB.Version]). Reading a file in WAL mode needs its -shm index:
	// a read-only DB may leave empty -wal and -shm files next to the
	// database, which the next read-write [DB.Close] removes. A file
	// closed with [DB.CloseKeepLog] is read with its log, as a live file.
	ReadOnly bool
	// Layer, when not nil, is a second schema kept in the file beside the
	// one Migrations describe, with a version of its own (see [Layer]).
	// Open checks it with user_version, before anything is written, and
	// migrates it in the same transaction as Migrations. A read-only Open
	// checks it and migrates nothing.
	Layer *Layer
}

// A Layer is a schema that a library keeps in files whose main schema
// ([Options.Migrations], versioned by PRAGMA user_version) belongs to its
// caller: the actors runtime keeps its own tables in every part's file
// this way. Its state is the one other integer of the database header
// that SQLite leaves to applications, PRAGMA application_id (32 bits),
// whose meaning the layer decides: reading it costs no page beyond the
// header, and storing it costs no page at all.
type Layer struct {
	// Check is called with the file's application_id before anything
	// is written to the file. It reports whether Migrate must run; an
	// error refuses the file, which is then left untouched, as a file
	// newer than Migrations is (it should wrap [ErrSchemaTooNew] when
	// the file was written by a newer program).
	Check func(id int32) (migrate bool, err error)
	// Migrate brings the layer up to date in Open's migration
	// transaction, before the pending Migrations. It is called with
	// the application_id read again under the write lock (and only if
	// Check, called again with it, still asks for it) and returns the
	// new one, which is written once the Migrations have run. It must
	// not end tx.
	Migrate func(tx *Tx, id int32) (int32, error)
}

// DB is one SQLite database file, accessed through a single connection. It
// is safe for concurrent use: transactions are serialized, [DB.Begin]
// waiting for the current one to end.
//
// Because of that, a goroutine holding a [Tx] must not call Begin, Update,
// View, Checkpoint or IntegrityCheck on the same DB before ending it: the
// call would wait for the goroutine's own transaction until its context is
// done.
type DB struct {
	path        string
	readOnly    bool
	version     int
	appID       int32 // see ApplicationID
	wroteAtOpen bool  // see WroteAtOpen

	sqlDB *sql.DB
	conn  *sql.Conn

	// slot holds one token while a transaction, a checkpoint or an
	// integrity check uses the connection; Begin waits for it.
	slot chan struct{}
	// closing is closed by Close to wake up waiters on slot.
	closing chan struct{}
	closed  atomic.Bool
	// aborted is set by SQLite's rollback hook: the open transaction (if
	// any) has been rolled back, possibly by SQLite itself after an error.
	// begin clears it once BEGIN has succeeded.
	aborted atomic.Bool
	// wrote is set by SQLite's commit hook, which runs only for
	// transactions that wrote; begin clears it.
	wrote atomic.Bool

	// mu serializes statements issued on conn by this package and guards
	// cur and the state of the Tx and Savepoint values.
	mu  sync.Mutex
	cur *Tx
	// stmts caches prepared statements by query text (guarded by mu), at
	// most maxCachedStmts of them: preparing costs about as much as running
	// a small statement.
	stmts   map[string]*sql.Stmt
	retired []*sql.Stmt // evicted from stmts, closed when the Tx ends
}

// maxCachedStmts bounds a DB's statement cache; when it is full the cache is
// emptied and starts again.
const maxCachedStmts = 128

// stmtLocked returns the prepared statement for query, preparing and caching
// it if needed. db.mu is held.
func (db *DB) stmtLocked(query string) (*sql.Stmt, error) {
	if st, ok := db.stmts[query]; ok {
		return st, nil
	}
	if db.stmts == nil || len(db.stmts) >= maxCachedStmts {
		// Rows of the cached statements may be open in the current
		// transaction: close them when it ends.
		for _, st := range db.stmts {
			db.retired = append(db.retired, st)
		}
		db.stmts = make(map[string]*sql.Stmt)
	}
	st, err := db.conn.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, db.classify(err)
	}
	db.stmts[query] = st
	return st, nil
}

// closeStmtsLocked closes every prepared statement; no rows may be open.
func (db *DB) closeStmtsLocked() {
	for q, st := range db.stmts {
		_ = st.Close()
		delete(db.stmts, q)
	}
	db.closeRetiredLocked()
}

// closeRetiredLocked closes the statements evicted from the cache, once no
// rows of theirs can be open.
func (db *DB) closeRetiredLocked() {
	for _, st := range db.retired {
		_ = st.Close()
	}
	db.retired = nil
}

// execLocked runs a statement through the cache. db.mu is held.
func (db *DB) execLocked(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := db.stmtLocked(query)
	if err != nil {
		return nil, err
	}
	res, err := st.ExecContext(ctx, args...)
	if err != nil {
		return nil, db.classify(err)
	}
	return res, nil
}

// Open opens the SQLite file at path, creating it unless opts.ReadOnly is
// set, configures the connection (see the package documentation for the
// pragmas) and applies the pending migrations of opts atomically.
//
// Open does not create missing parent directories. A new file is written
// directly as an empty database in WAL mode and set up without any sync
// with [SyncNormal]; with [SyncFull], Open syncs the new file and its parent
// directory before returning, so that they survive a power loss (see
// "Creating a file" in the package documentation). A file that exists is
// reopened as it is, with its write-ahead log if [DB.CloseKeepLog] left one.
//
// Errors wrap [ErrSchemaTooNew] when the file is newer than opts.Migrations
// (the file is then left untouched), [ErrMigration] when a migration fails
// (the file keeps its previous version), [ErrCorrupt] when the file is not
// a SQLite database, and [fs.ErrNotExist] when a read-only file or the
// parent directory is missing.
func Open(ctx context.Context, path string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Sync != SyncFull && o.Sync != SyncNormal {
		return nil, fmt.Errorf("persistence: open %s: invalid sync mode %v", path, o.Sync)
	}
	if o.BusyTimeout < 0 {
		return nil, fmt.Errorf("persistence: open %s: negative busy timeout %v", path, o.BusyTimeout)
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if path == "" {
		return nil, errors.New("persistence: open: empty path")
	}

	created := false
	if _, err := os.Stat(path); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("persistence: open %s: %w", path, err)
		}
		if o.ReadOnly {
			return nil, fmt.Errorf("persistence: open %s read-only: %w", path, err)
		}
		if created, err = createFile(path, o.Sync == SyncFull); err != nil {
			return nil, fmt.Errorf("persistence: open %s: create: %w", path, classifyAt(path, err))
		}
	}

	dsn, err := fileURI(path, o.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("persistence: open %s: %w", path, err)
	}
	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("persistence: open %s: %w", path, err)
	}
	sqlDB.SetMaxOpenConns(1)
	sqlDB.SetMaxIdleConns(1)
	sqlDB.SetConnMaxLifetime(0)
	sqlDB.SetConnMaxIdleTime(0)

	conn, err := sqlDB.Conn(ctx)
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("persistence: open %s: connect: %w", path, classifyAt(path, err))
	}

	if !o.ReadOnly {
		if err := checkReadWrite(conn, path); err != nil {
			_ = conn.Close()
			_ = sqlDB.Close()
			return nil, err
		}
	}

	db := &DB{
		path:     path,
		readOnly: o.ReadOnly,
		sqlDB:    sqlDB,
		conn:     conn,
		slot:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
	}
	ok := false
	defer func() {
		// Also runs when a migration panics.
		if !ok {
			db.abandon()
		}
	}()
	if err := db.setup(ctx, &o, created); err != nil {
		return nil, err
	}
	ok = true
	return db, nil
}

// setup runs the Open sequence on a fresh connection: pragmas, schema version
// check, migrations and, for a new file, the parent directory sync.
func (db *DB) setup(ctx context.Context, o *Options, created bool) error {
	if err := db.registerRollbackHook(); err != nil {
		return fmt.Errorf("persistence: open %s: %w", db.path, err)
	}
	// busy_timeout first: every later statement may need to wait for a
	// lock held by another connection.
	busyMs := int64((o.BusyTimeout + time.Millisecond - 1) / time.Millisecond)
	if err := db.execSetup(ctx, "PRAGMA busy_timeout = "+strconv.FormatInt(busyMs, 10)); err != nil {
		return err
	}
	if db.readOnly {
		if err := db.execSetup(ctx, "PRAGMA query_only = 1"); err != nil {
			return err
		}
		if err := db.registerReadOnlyAuthorizer(); err != nil {
			return fmt.Errorf("persistence: open %s: %w", db.path, err)
		}
	}

	// The version check comes before anything that could write to the
	// file (journal_mode=WAL converts it), so that a file written by a
	// newer program is left exactly as it was.
	version, err := db.userVersion(ctx)
	if err != nil {
		return err
	}
	if (!db.readOnly || len(o.Migrations) > 0) && version > len(o.Migrations) {
		return db.tooNew(version, len(o.Migrations))
	}
	db.version = version
	layerPending := false
	if o.Layer != nil {
		if db.appID, err = db.applicationID(ctx); err != nil {
			return err
		}
		if layerPending, err = o.Layer.Check(db.appID); err != nil {
			return fmt.Errorf("persistence: open %s: %w", db.path, err)
		}
	}
	if db.readOnly {
		return nil
	}

	// A new file with SyncNormal is set up without any sync (see "Creating
	// a file" in the package documentation): nothing in it can have been
	// acknowledged yet, and the first sync that makes a commit durable
	// (a checkpoint, a Barrier's) covers the file, its log and their
	// directory entries.
	unsynced := created && o.Sync == SyncNormal
	syncMode := o.Sync.String()
	if unsynced {
		syncMode = "OFF"
	}
	// synchronous before journal_mode: converting a file to WAL is a
	// transaction of its own.
	if err := db.execSetup(ctx, "PRAGMA synchronous = "+syncMode); err != nil {
		return err
	}
	var mode string
	if err := db.conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return fmt.Errorf("persistence: open %s: set journal_mode: %w", db.path, db.classify(err))
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("persistence: open %s: journal_mode is %q, want \"wal\"", db.path, mode)
	}
	if err := db.execSetup(ctx, "PRAGMA foreign_keys = ON"); err != nil {
		return err
	}

	if version < len(o.Migrations) || layerPending {
		if err := db.migrate(ctx, o.Migrations, o.Layer); err != nil {
			return err
		}
		db.wroteAtOpen = true
	}
	db.wroteAtOpen = db.wroteAtOpen || created
	if unsynced {
		if err := db.execSetup(ctx, "PRAGMA synchronous = "+o.Sync.String()); err != nil {
			return err
		}
	}

	// With SyncNormal nothing survives a power loss until it is synced by
	// other means (a Barrier's sync covers directory entries too), so only
	// SyncFull pays for the directory sync here.
	if created && o.Sync == SyncFull {
		if err := syncDir(filepath.Dir(db.path)); err != nil {
			return fmt.Errorf("persistence: open %s: sync parent directory: %w", db.path, err)
		}
	}
	return nil
}

// execSetup executes one configuration statement of Open.
func (db *DB) execSetup(ctx context.Context, stmt string) error {
	if _, err := db.conn.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("persistence: open %s: %s: %w", db.path, stmt, db.classify(err))
	}
	return nil
}

// userVersion reads PRAGMA user_version.
func (db *DB) userVersion(ctx context.Context) (int, error) {
	var v int
	if err := db.conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("persistence: open %s: read user_version: %w", db.path, db.classify(err))
	}
	return v, nil
}

// applicationID reads PRAGMA application_id.
func (db *DB) applicationID(ctx context.Context) (int32, error) {
	var v int32
	if err := db.conn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&v); err != nil {
		return 0, fmt.Errorf("persistence: open %s: read application_id: %w", db.path, db.classify(err))
	}
	return v, nil
}

func (db *DB) tooNew(version, known int) error {
	return fmt.Errorf("%w: %s is at schema version %d, this program knows versions up to %d",
		ErrSchemaTooNew, db.path, version, known)
}

// registerReadOnlyAuthorizer makes SQLite refuse, on a read-only
// connection, every statement that could write anywhere: query_only and
// the read-only open mode protect the main file only, and a query could
// otherwise set a pragma back (PRAGMA query_only = 0) or ATTACH another file
// read-write. Reads, functions, transactions and pragmas that only read
// are allowed.
func (db *DB) registerReadOnlyAuthorizer() error {
	return db.conn.Raw(func(dc any) error {
		r, ok := dc.(sqlite.AuthorizerRegisterer)
		if !ok {
			return fmt.Errorf("driver connection %T has no authorizer", dc)
		}
		return r.RegisterAuthorizer(func(action sqlite.AuthorizerActionCode, arg1, arg2, _, _ string) sqlite.AuthorizerReturnCode {
			switch action {
			case sqlite.AuthRead, sqlite.AuthSelect, sqlite.AuthFunction, sqlite.AuthTransaction,
				sqlite.AuthSavepoint, sqlite.AuthRecursive:
				return sqlite.AuthorizerOK
			case sqlite.AuthPragma:
				name := strings.ToLower(arg1)
				if (arg2 == "" && !writingPragma[name]) || inspectingPragma[name] {
					return sqlite.AuthorizerOK // a pragma that reports, not one that sets
				}
			}
			return sqlite.AuthorizerDeny
		})
	})
}

// inspectingPragma lists the pragmas whose argument names what to look
// at, not a value to set.
var inspectingPragma = map[string]bool{
	"integrity_check": true, "quick_check": true, "foreign_key_check": true, "foreign_key_list": true,
	"index_info": true, "index_list": true, "index_xinfo": true, "table_info": true, "table_xinfo": true, "table_list": true,
}

// writingPragma lists the pragmas that change something even without an
// argument.
var writingPragma = map[string]bool{
	"incremental_vacuum": true, "optimize": true, "shrink_memory": true, "wal_checkpoint": true,
}

// registerRollbackHook makes SQLite report every transaction rollback, in
// particular the ones it performs on its own after a failed statement, so
// that the open Tx stops issuing statements that would otherwise run
// outside any transaction.
//
// It also registers a commit hook, which SQLite calls only when a
// transaction that wrote to the file commits: that is how [Tx.Wrote] knows
// whether a commit has anything to make durable.
func (db *DB) registerRollbackHook() error {
	type hooker interface {
		RegisterRollbackHook(sqlite.RollbackHookFn)
		RegisterCommitHook(sqlite.CommitHookFn)
	}
	return db.conn.Raw(func(dc any) error {
		h, ok := dc.(hooker)
		if !ok {
			return fmt.Errorf("driver connection %T has no rollback or commit hook", dc)
		}
		h.RegisterRollbackHook(func() { db.aborted.Store(true) })
		h.RegisterCommitHook(func() int32 {
			db.wrote.Store(true)
			return 0 // 0: let the commit proceed
		})
		return nil
	})
}

// abandon releases the connection of a DB whose Open failed.
func (db *DB) abandon() {
	db.closed.Store(true)
	db.mu.Lock()
	db.closeStmtsLocked() // a cached statement keeps the file open
	db.mu.Unlock()
	_ = db.conn.Close()
	_ = db.sqlDB.Close()
}

// Path returns the path given to [Open]. It keeps working after Close.
func (db *DB) Path() string { return db.path }

// WroteAtOpen reports whether Open changed the file: created it, or applied
// migrations. A caller that syncs commits by other means (a Barrier) knows
// from it whether an opened file may hold writes not synced yet.
func (db *DB) WroteAtOpen() bool { return db.wroteAtOpen }

// Version returns the schema version of the file (PRAGMA user_version) as
// it was once Open had applied the migrations. For a read-only DB it is the
// version found in the file. It keeps working after Close.
func (db *DB) Version() int { return db.version }

// ApplicationID returns the file's PRAGMA application_id as it was once
// Open had migrated [Options.Layer]; without a Layer it is not read, and
// is 0. It keeps working after Close.
func (db *DB) ApplicationID() int32 { return db.appID }

// acquire takes the connection slot, waiting for the current transaction
// to end. It fails with ctx's error or with ErrClosed.
func (db *DB) acquire(ctx context.Context) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case db.slot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-db.closing:
		return ErrClosed
	}
}

// release gives the connection slot back.
func (db *DB) release() { <-db.slot }

// Checkpoint copies the content of the write-ahead log into the database
// file and truncates the log (PRAGMA wal_checkpoint(TRUNCATE)). It waits for
// the current transaction to end. It fails on a read-only DB.
func (db *DB) Checkpoint(ctx context.Context) error {
	if err := db.acquire(ctx); err != nil {
		return wrapAcquire("checkpoint", err)
	}
	defer db.release()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	if db.readOnly {
		return fmt.Errorf("persistence: checkpoint %s: database is opened read-only", db.path)
	}
	return db.checkpointLocked(ctx)
}

func (db *DB) checkpointLocked(ctx context.Context) error {
	var busy, logFrames, checkpointed int
	err := db.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &checkpointed)
	if err != nil {
		return fmt.Errorf("persistence: checkpoint %s: %w", db.path, db.classify(err))
	}
	if busy != 0 {
		return fmt.Errorf("persistence: checkpoint %s: incomplete, another connection holds the database (%d of %d frames copied)",
			db.path, checkpointed, logFrames)
	}
	return nil
}

// maxIntegrityProblems bounds the problems IntegrityCheck reports.
const maxIntegrityProblems = 10

// IntegrityCheck runs PRAGMA integrity_check on the file. It returns nil
// when SQLite answers "ok", and otherwise an error wrapping [ErrCorrupt]
// that lists the first problems found. It waits for the current transaction
// to end.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	if err := db.acquire(ctx); err != nil {
		return wrapAcquire("integrity check", err)
	}
	defer db.release()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}

	rows, err := db.conn.QueryContext(ctx, "PRAGMA integrity_check("+strconv.Itoa(maxIntegrityProblems)+")")
	if err != nil {
		return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
		}
		for _, line := range strings.Split(s, "\n") {
			if line = strings.TrimSpace(line); line != "" && len(problems) < maxIntegrityProblems {
				problems = append(problems, line)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	if len(problems) == 0 {
		return fmt.Errorf("%w: %s: integrity check returned no result", ErrCorrupt, db.path)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, db.path, strings.Join(problems, "; "))
}

// Close ends the DB. If a transaction is open it is rolled back first;
// unless the DB is read-only, the write-ahead log is then checkpointed and
// truncated, and the connection closed, which lets SQLite remove the -wal
// and -shm files: the database file alone holds the data. After Close every
// method returns [ErrClosed]. Close is safe to call more than once and
// concurrently (with itself and with [DB.CloseKeepLog]): only the first call
// does the work, the others return nil at once.
func (db *DB) Close() error { return db.close(false) }

// CloseKeepLog ends the DB like [DB.Close], but leaves the write-ahead log
// and its shared-memory index (the -wal and -shm files) beside the database
// file, so that the next Open of the file neither creates them again nor
// syncs a new log header at its first write: it is the close of a file that
// is expected to be opened again soon.
//
// The log is checkpointed first (PRAGMA wal_checkpoint(PASSIVE): every
// commit is copied into the database file, the log synced before and the
// database file after), and kept with at least one and at most 16 frames
// and 1 MiB: a longer log is truncated and started again, an empty one is
// given one frame. If another connection reads an old snapshot, the log is
// left as it is rather than waited for, and the commits it holds stay in
// it. Other connections read such a file, log included, as a live one; see
// "Closing and reopening" in the package documentation for what this means
// for tools. For a read-only DB, CloseKeepLog is Close. Like Close, it is
// safe to call more than once, and after it every method returns
// [ErrClosed].
func (db *DB) CloseKeepLog() error { return db.close(true) }

func (db *DB) close(keepLog bool) error {
	if !db.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(db.closing)

	db.mu.Lock()
	defer db.mu.Unlock()
	var errs []error
	if tx := db.cur; tx != nil {
		if err := db.rollbackLocked(); err != nil {
			errs = append(errs, fmt.Errorf("roll back open transaction: %w", err))
		}
		db.finishLocked(tx)
	}
	db.closeStmtsLocked()
	switch {
	case db.readOnly:
	case keepLog:
		if err := db.keepLogLocked(); err != nil {
			errs = append(errs, err)
		}
	default:
		if err := db.checkpointLocked(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := db.conn.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := db.sqlDB.Close(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("persistence: close %s: %w", db.path, errors.Join(errs...))
	}
	return nil
}

// Bounds on the write-ahead log that CloseKeepLog leaves behind. The next
// Open reads every frame of the log to rebuild its index (a few
// microseconds each), and the next close copies them all into the database
// file again, so the log is kept short: beyond keepLogMaxFrames frames, or
// keepLogMaxBytes on disk (a large transaction, or a log that SQLite
// restarted without truncating it), it is truncated and started again.
const (
	keepLogMaxFrames = 16
	keepLogMaxBytes  = 1 << 20
)

// keepLogLocked prepares the connection's close for CloseKeepLog: SQLite is
// told to keep the log and its index, the log is checkpointed, and it is
// left with at least one frame.
//
// Why at least one frame: after a complete checkpoint, the next transaction
// that writes starts the log again from its beginning, and SQLite syncs the
// new log header before writing the first frame after it (even with
// synchronous=NORMAL). When the connection closes with a non-empty log, the
// next Open rebuilds the log's index from the frames and counts none of them
// as checkpointed, so its first write appends to the log instead: no sync.
// A log that is empty or too long is therefore started again here, at close,
// with one frame that rewrites the schema version with its own value.
func (db *DB) keepLogLocked() error {
	ctx := context.Background()
	err := db.conn.Raw(func(dc any) error {
		fc, ok := dc.(sqlite.FileControl)
		if !ok {
			return fmt.Errorf("driver connection %T has no file control", dc)
		}
		_, err := fc.FileControlPersistWAL("main", 1)
		return err
	})
	if err != nil {
		// SQLite will remove the log at close: close as Close does.
		return errors.Join(fmt.Errorf("keep the log: %w", err), db.checkpointLocked(ctx))
	}
	var busy, logFrames, copied int
	if err := db.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied); err != nil {
		return fmt.Errorf("checkpoint: %w", db.classify(err))
	}
	if busy != 0 || copied < logFrames {
		// Another connection reads an old snapshot: leave the log as
		// it is rather than wait for it.
		return nil
	}
	var walSize int64
	if fi, err := os.Stat(db.path + "-wal"); err == nil {
		walSize = fi.Size()
	}
	if logFrames > 0 && logFrames <= keepLogMaxFrames && walSize <= keepLogMaxBytes {
		return nil
	}
	if err := db.checkpointLocked(ctx); err != nil {
		return err
	}
	return db.seedLogLocked(ctx)
}

// seedLogLocked starts an empty log with one frame (see keepLogLocked): a
// transaction that sets the schema version to the value it has.
func (db *DB) seedLogLocked(ctx context.Context) (err error) {
	if _, err := db.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("restart the log: %w", db.classify(err))
	}
	defer func() {
		if err != nil {
			_, _ = db.conn.ExecContext(ctx, "ROLLBACK")
		}
	}()
	var v int
	if err := db.conn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("restart the log: %w", db.classify(err))
	}
	if _, err := db.conn.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(v)); err != nil {
		return fmt.Errorf("restart the log: %w", db.classify(err))
	}
	if _, err := db.conn.ExecContext(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("restart the log: %w", db.classify(err))
	}
	// SQLite checkpoints the log once more as the connection closes, and
	// would sync the log and the database file around copying that frame.
	// The frame holds page 1 as the database file has it already (the
	// same schema version), so the copy is made without syncs: a torn or
	// lost copy of identical bytes changes nothing, and the log, whose
	// header has just been synced, is not started again before a
	// checkpoint that syncs.
	if _, err := db.conn.ExecContext(ctx, "PRAGMA synchronous = OFF"); err != nil {
		return fmt.Errorf("restart the log: %w", db.classify(err))
	}
	return nil
}

// CheckFile opens the file at path read-only, runs [DB.IntegrityCheck] and
// closes it. The error wraps [ErrCorrupt] when the file is damaged or is not
// a SQLite database, and [fs.ErrNotExist] when it is missing.
//
// A file in rollback-journal mode that a crash left with a hot journal
// (path + "-journal") cannot be read read-only: SQLite must roll the
// interrupted transaction back first, which the next read-write open does.
// CheckFile then checks what that open would find: it copies the file and
// its journal to a temporary directory (as much space as the file takes),
// rolls the copy back and checks the copy, leaving the original as it was.
//
// Like any read-only DB, it may leave empty -wal and -shm files next to a
// WAL-mode database (see [Options.ReadOnly]).
func CheckFile(ctx context.Context, path string) error {
	err := checkFile(ctx, path)
	if sqliteExtendedCode(err) != sqliteReadOnlyRollback {
		return err
	}
	if _, serr := os.Stat(path + "-journal"); serr != nil {
		return err
	}
	tmp, terr := os.MkdirTemp("", "fractal-check-")
	if terr != nil {
		return errors.Join(err, fmt.Errorf("persistence: check %s: recovering a copy: %w", path, terr))
	}
	defer os.RemoveAll(tmp)
	cp := filepath.Join(tmp, filepath.Base(path))
	for _, suffix := range []string{"", "-journal"} {
		if cerr := copyFile(path+suffix, cp+suffix); cerr != nil {
			return errors.Join(err, fmt.Errorf("persistence: check %s: recovering a copy: %w", path, cerr))
		}
	}
	// The first read of a read-write connection rolls the copy's journal
	// back.
	if rerr := rollBack(ctx, cp); rerr != nil {
		return fmt.Errorf("persistence: check %s (rolled back in a copy): %w", path, classify(rerr))
	}
	if cerr := checkFile(ctx, cp); cerr != nil {
		return fmt.Errorf("persistence: check %s (rolled back in a copy): %w", path, cerr)
	}
	return nil
}

// checkFile is CheckFile without the recovery of a hot journal.
func checkFile(ctx context.Context, path string) error {
	db, err := Open(ctx, path, &Options{ReadOnly: true})
	if err != nil {
		return err
	}
	checkErr := db.IntegrityCheck(ctx)
	closeErr := db.Close()
	return errors.Join(checkErr, closeErr)
}

// rollBack opens the file at path read-write, which rolls a hot journal
// back, and closes it.
func rollBack(ctx context.Context, path string) error {
	dsn, err := fileURI(path, false)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", strings.Replace(dsn, "mode=rwc", "mode=rw", 1))
	if err != nil {
		return err
	}
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&n)
	return errors.Join(err, db.Close())
}

// copyFile copies the file src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// checkReadWrite returns an error when SQLite opened the file of conn for
// reading only. It does so without a word when it cannot open the file for
// writing, and each write then fails naming no file: because this process
// may not write the file (ErrReadOnly), or because the open for writing
// failed for a passing reason, such as the process out of file descriptors
// at that moment (ErrCantOpen, which a caller may retry).
func checkReadWrite(conn *sql.Conn, path string) error {
	var ro bool
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(interface{ IsReadOnly(string) (bool, error) })
		if !ok {
			return nil // a driver that cannot tell: SQLite's own errors stand
		}
		var err error
		ro, err = c.IsReadOnly("main")
		return err
	})
	if err != nil {
		return fmt.Errorf("persistence: open %s: %w", path, err)
	}
	if !ro {
		return nil
	}
	if err := writable(path); err != nil {
		if pe, ok := err.(*fs.PathError); ok {
			err = pe.Err // the path is in the message already
		}
		return fmt.Errorf("persistence: open %s: %w: %w", path, ErrReadOnly, err)
	}
	return fmt.Errorf("persistence: open %s: %w: SQLite could open it only for reading (out of file descriptors?)", path, ErrCantOpen)
}

// writable returns nil when this process may write the existing file at
// path, and the reason otherwise. It asks the system by opening the file for
// writing, so that permissions, ACLs and a read-only mount all count, as
// they do for SQLite. It costs an open and a close (a few microseconds).
func writable(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// wrapAcquire adds context to an error of acquire, keeping ErrClosed bare.
func wrapAcquire(op string, err error) error {
	if errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("persistence: %s: %w", op, err)
}

// SQLite primary result codes this package interprets.
const (
	sqliteError    = 1
	sqliteCorrupt  = 11
	sqliteNotADB   = 26
	sqliteCantOpen = 14
	sqliteIOErr    = 10
	sqliteFull     = 13
	sqliteReadOnly = 8
)

// sqliteReadOnlyRollback is SQLITE_READONLY_ROLLBACK: a read-only
// connection found a hot journal it may not roll back.
const sqliteReadOnlyRollback = sqliteReadOnly | 3<<8

// sqliteExtendedCode returns the extended SQLite result code of err, or 0.
func sqliteExtendedCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// sqliteCode returns the primary SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// classify wraps err with ErrCorrupt when SQLite reported a damaged file or
// a file that is not a database, with ErrCantOpen when it could not open
// one, with ErrDiskFull when SQLite or the system said the file system is
// full, and with ErrReadOnly when SQLite could not write (the file, its
// directory, or a connection that only reads).
func classify(err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrCantOpen) || errors.Is(err, ErrDiskFull) || errors.Is(err, ErrReadOnly) {
		return err // classified already
	}
	switch sqliteCode(err) {
	case sqliteCorrupt, sqliteNotADB:
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	case sqliteCantOpen:
		return fmt.Errorf("%w: %w", ErrCantOpen, err)
	case sqliteFull:
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	case sqliteReadOnly:
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

// lowSpaceBytes: below this much space available on the file system of a
// file, an I/O error of SQLite on that file is reported as ErrDiskFull.
// SQLite reports some writes that failed for want of space as bare I/O
// errors (growing the log's index: SQLITE_IOERR_SHMSIZE), and 1 MiB is more
// than any single such write needs (the index grows by 32 KiB).
const lowSpaceBytes = 1 << 20

// classifyAt is classify for an error on the file at path: an I/O error is
// also taken for a full disk when the file system holding path is all but
// full.
func classifyAt(path string, err error) error {
	err = classify(err)
	if err == nil || errors.Is(err, ErrDiskFull) || sqliteCode(err) != sqliteIOErr {
		return err
	}
	if lowSpace(filepath.Dir(path)) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

// classify is classifyAt for the file of db.
func (db *DB) classify(err error) error { return classifyAt(db.path, err) }

// fileURI returns the driver DSN for path: a SQLite URI filename
// (https://www.sqlite.org/uri.html), so that mode=ro is honoured and a
// read-only open never creates the file.
func fileURI(path string, readOnly bool) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows volume: file:///C:/dir/file
	}
	p = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(p)
	mode := "rwc"
	if readOnly {
		mode = "ro"
	}
	return "file://" + p + "?mode=" + mode, nil
}
