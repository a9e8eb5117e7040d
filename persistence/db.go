package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// Close ends the DB. If a transaction is open it is rolled back first;
// unless the DB is read-only, the write-ahead log is then checkpointed and
// truncated, and the connection closed, which lets SQLite remove the -wal
// and -shm files: the database file alone holds the data. After Close every
// method returns [ErrClosed]. Close is safe to call more than once and
// concurrently (with itself and with [DB.CloseKeepLog]): only the first call
// does the work, the others return nil at once.
func (db *DB) Close() error { return db.close(false) }

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
