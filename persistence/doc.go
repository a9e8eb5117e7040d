// Package persistence owns one SQLite database file: it opens it with
// durable settings, brings its schema up to date with ordered migrations,
// and runs transactions on it one at a time.
//
// The package knows nothing of its users: it is a small layer over
// database/sql and the pure Go SQLite driver modernc.org/sqlite. A [DB]
// holds a single connection for its whole life and issues BEGIN, COMMIT,
// ROLLBACK and SAVEPOINT itself, which gives it control over what happens
// when a commit fails.
//
//	db, err := persistence.Open(ctx, "/var/lib/app/state.db", &persistence.Options{
//		Migrations: []persistence.Migration{
//			{Name: "create kv", SQL: `CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) STRICT`},
//		},
//	})
//	if err != nil {
//		return err
//	}
//	defer db.Close()
//	err = db.Update(ctx, func(tx *persistence.Tx) error {
//		_, err := tx.Exec(`INSERT INTO kv VALUES (?, ?)`, "k", []byte("v"))
//		return err
//	})
//
// # Pragmas
//
// [Open] configures the connection in this order:
//
//   - busy_timeout = [Options.BusyTimeout] (5s by default): if another
//     connection (a backup tool, a read-only inspection) holds a lock, a
//     statement waits for it instead of failing at once with SQLITE_BUSY.
//     It comes first because every later statement may need it.
//   - user_version is read and compared with the number of migrations
//     before anything else touches the file: a file written by a newer
//     program is refused with [ErrSchemaTooNew] and left byte for byte as
//     it was (switching the journal mode would already rewrite its header).
//   - journal_mode = WAL: commits append to a write-ahead log instead of
//     rewriting pages in place, which makes a commit a sequential write and
//     a single sync, lets readers of other connections see a consistent
//     snapshot while a transaction is open, and keeps the database file
//     intact if the process dies mid-commit. The mode is persistent; Open
//     checks that SQLite answers "wal".
//   - synchronous = FULL ([SyncFull], the default) or NORMAL
//     ([SyncNormal]). FULL syncs the log at every commit, so a commit
//     survives power loss; NORMAL syncs only at checkpoints, so a commit
//     survives a process crash but the last ones may be lost (never
//     corrupted) on power loss.
//   - foreign_keys = ON: SQLite does not enforce FOREIGN KEY constraints
//     unless asked to, per connection.
//
// With [Options.ReadOnly] the file is opened with mode=ro and PRAGMA
// query_only = 1, and only busy_timeout is set besides: no pragma that
// writes to the file is issued and no migration is applied.
//
// # Migrations
//
// The schema version of a file is PRAGMA user_version, an integer stored in
// the database header. [Options.Migrations] is the ordered history of the
// schema: migration i brings the version from i to i+1, with SQL text
// (several statements allowed) or a Go function. Migrations are never
// edited or removed once released; a new schema change is a new migration
// appended to the list.
//
// Open applies all pending migrations in a single BEGIN IMMEDIATE
// transaction that also sets user_version: either all of them are applied,
// or, if one fails, none is and the file keeps its previous version; the
// error wraps [ErrMigration] and names the failing migration. A file whose
// version is greater than len(Migrations) is refused with
// [ErrSchemaTooNew].
//
// Foreign key enforcement is switched off while migrations run and PRAGMA
// foreign_key_check must report no violation before they commit. This is
// the procedure SQLite documents for schema changes that rebuild a table
// (create the new table, copy, drop the old one, rename): with enforcement
// on, dropping a parent table would cascade to, or be refused by, its
// children. The flip side is that ON DELETE and ON UPDATE actions do not
// fire inside migrations.
//
// # Transactions and savepoints
//
// A DB runs one transaction at a time. [DB.Begin] starts a transaction
// that may write with BEGIN (deferred): the write lock is taken at the first
// write, so a transaction that only reads commits without writing or syncing
// anything, and [Tx.Wrote] tells which kind it was. A file is meant to have
// a single writing DB (the actors runtime guarantees it), so the upgrade
// from reading to writing does not contend. Begin waits (honouring its
// context) while another transaction is open. The
// returned [Tx] is ended with [Tx.Commit] or [Tx.Rollback]. [DB.Update]
// wraps this: it commits when its callback returns nil and rolls back when
// the callback fails or panics. [DB.View] runs a read transaction, with
// PRAGMA query_only set so that writes fail, and always rolls it back.
//
// When COMMIT fails (a DEFERRABLE INITIALLY DEFERRED foreign key violated
// by the transaction, a full disk, an I/O error), SQLite may leave the
// transaction open; [Tx.Commit] then rolls it back and returns an error
// wrapping [ErrCommit], and the DB stays usable. Some statement failures
// (INSERT OR ROLLBACK, a RAISE(ROLLBACK) in a trigger, some I/O errors)
// make SQLite roll the whole transaction back on its own; the Tx notices,
// refuses further statements with an error wrapping [ErrTxDone] (so that
// none of them runs outside a transaction) and Commit fails with
// [ErrCommit].
//
// [Tx.Savepoint] opens a nested transaction: [Savepoint.Rollback] undoes
// only the changes made since it was opened and leaves the transaction
// open; [Savepoint.Release] keeps them. Savepoints nest.
//
// # Durability
//
// With [SyncFull], a commit that returned nil is on stable storage: the
// write-ahead log has been synced. When Open creates the file, it also
// syncs the parent directory before returning, because a new directory
// entry is not made durable by syncing the file itself; SQLite does the
// same for the -wal file it creates.
//
// With [SyncNormal], a commit survives a crash of the process but not a
// power loss, and Open does not sync the parent directory. A [Barrier]
// makes such commits durable in bulk: one sync of the file system (data,
// logs and directory entries alike) for all the commits made meanwhile. Open does not create missing parent
// directories.
//
// The log is copied back into the database file by SQLite's automatic
// checkpoints, by [DB.Checkpoint], and by [DB.Close], which runs PRAGMA
// wal_checkpoint(TRUNCATE) before closing the connection so that SQLite
// removes the -wal and -shm files and the database file alone holds the
// data. [DB.IntegrityCheck] and [CheckFile] run PRAGMA integrity_check and
// report a damaged file with [ErrCorrupt].
//
// # Statements and rows
//
// A DB prepares each distinct statement once and keeps it, at most 128 of
// them (the cache starts again when full), since preparing costs about as
// much as running a small statement. Rows opened in a transaction are
// closed when it ends, before any cached statement is released.
//
// # Backup
//
// [DB.Backup] copies the database into a new file with SQLite's online
// backup API, in one step under one read transaction: a consistent snapshot
// even while another connection writes, and available on a read-only DB.
// The copy is synced and integrity-checked before Backup returns.
package persistence
