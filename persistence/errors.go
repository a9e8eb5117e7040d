package persistence

import "errors"

// Sentinel errors returned by this package. Errors returned by the package
// wrap them with context (file path, migration name, SQLite's message); test
// for them with [errors.Is].
var (
	// ErrClosed is returned by every method of a [DB], and of its [Tx] and
	// [Savepoint] values, once [DB.Close] has been called.
	ErrClosed = errors.New("persistence: database is closed")

	// ErrTxDone is returned when a [Tx] is used after it was committed or
	// rolled back, or a [Savepoint] after it was released or rolled back
	// (directly, or because an enclosing savepoint or the transaction
	// ended). It is also wrapped in the error returned when SQLite rolled
	// the transaction back on its own after a statement failed (for
	// instance INSERT OR ROLLBACK, or an I/O error): the transaction is over
	// even though the caller has not ended it yet.
	ErrTxDone = errors.New("persistence: transaction has already ended")

	// ErrTxManaged is returned by [Tx.Commit] and [Tx.Rollback] when called on
	// a transaction owned by [DB.Update], [DB.View] or a [Migration]: those
	// end the transaction themselves, according to the callback's result.
	ErrTxManaged = errors.New("persistence: transaction is ended by its owner (Update, View or Open)")

	// ErrCommit is wrapped by the error [Tx.Commit] returns when the
	// transaction could not be committed (deferred constraint violation,
	// disk full, I/O error, cancelled context, or an earlier rollback by
	// SQLite). The transaction has been rolled back: none of its changes
	// are in the file and the [DB] remains usable.
	ErrCommit = errors.New("persistence: commit failed, transaction rolled back")

	// ErrCantOpen is wrapped by the errors of SQLite's own failures to open
	// a file (SQLITE_CANTOPEN): a missing directory, a permission, or the
	// process out of file descriptors.
	ErrCantOpen = errors.New("persistence: cannot open the file")

	// ErrReadOnly is wrapped by the error [Open] returns when the file
	// exists but this process may not write it (its permissions, or a
	// read-only file system): SQLite would open such a file read-only
	// without a word and refuse each write later, so Open refuses it at
	// once. It is also wrapped by SQLite's refusals to write
	// (SQLITE_READONLY: a directory in which the log cannot be created, a
	// write on a DB opened with [Options.ReadOnly]).
	ErrReadOnly = errors.New("persistence: file is not writable")

	// ErrDiskFull is wrapped by the errors of writes (commits, checkpoints,
	// file creation, Open's setup) that failed because the file system
	// holding the file has no space left: SQLite's SQLITE_FULL, ENOSPC, and
	// SQLite's I/O errors (such as SQLITE_IOERR_SHMSIZE, when the log's
	// index cannot grow) while less than 1 MiB is available to this
	// process on that file system. Nothing is lost: the failed transaction
	// was rolled back, and writes succeed again once space is freed.
	ErrDiskFull = errors.New("persistence: disk is full")

	// ErrCorrupt is wrapped by the error returned when the file is not a
	// valid SQLite database or fails the integrity check.
	ErrCorrupt = errors.New("persistence: database file is corrupt")

	// ErrSchemaTooNew is wrapped by the error [Open] returns when the file's
	// schema version (PRAGMA user_version) is greater than the number of
	// migrations the caller knows: the file was written by a newer program.
	// The file is left untouched.
	ErrSchemaTooNew = errors.New("persistence: database schema is newer than the known migrations")

	// ErrMigration is wrapped by the error [Open] returns when a migration
	// fails. All pending migrations are rolled back together: the file keeps
	// its previous schema version and content.
	ErrMigration = errors.New("persistence: migration failed")
)
