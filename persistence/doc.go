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
//     With [Options.Layer], application_id is read and checked at the same
//     point, for the same reason (see "Layers").
//   - synchronous = FULL ([SyncFull], the default) or NORMAL
//     ([SyncNormal]). FULL syncs the log at every commit, so a commit
//     survives power loss; NORMAL syncs only at checkpoints, so a commit
//     survives a process crash but the last ones may be lost (never
//     corrupted) on power loss. It is set before journal_mode because
//     converting a file to WAL is a transaction of its own. A file that
//     Open has just created with SyncNormal is set up with synchronous =
//     OFF, switched to NORMAL once its migrations are applied (see
//     "Creating a file").
//   - journal_mode = WAL: commits append to a write-ahead log instead of
//     rewriting pages in place, which makes a commit a sequential write and
//     a single sync, lets readers of other connections see a consistent
//     snapshot while a transaction is open, and keeps the database file
//     intact if the process dies mid-commit. The mode is persistent (it is
//     recorded in the database header), so on a file in WAL mode, which
//     every file Open made is, the pragma changes and writes nothing; Open
//     checks that SQLite answers "wal".
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
// # Layers
//
// A library that keeps tables of its own in files whose schema belongs to
// its caller (the actors runtime keeps its outbox, inbox, alarms and
// records of children in every part's file) cannot version them with
// user_version, which is the caller's. [Options.Layer] gives it the other
// integer of the database header that SQLite leaves to applications, PRAGMA
// application_id: reading it costs nothing beyond the header, which Open
// reads anyway, and storing it costs no page. [Layer.Check] decides from it,
// before anything is written, whether the layer must migrate, or refuses
// the file (left untouched, as a file too new for its migrations is);
// [Layer.Migrate] runs in the migration transaction, before the pending
// migrations, and the application_id it returns is written last, so a
// migration of the caller that set application_id does not keep it.
// [DB.ApplicationID] returns the value once Open is done. A current file
// is opened without writing anything.
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
// syncs it and its parent directory before returning, because a new
// directory entry is not made durable by syncing the file itself; SQLite
// does the same for the -wal file it creates.
//
// With [SyncNormal], a commit survives a crash of the process but not a
// power loss, and Open syncs neither a new file nor its directory. A
// [Barrier] makes such commits durable in bulk: one sync of the file system
// (data, logs and directory entries alike) for all the commits made
// meanwhile.
//
// The log is copied back into the database file by SQLite's automatic
// checkpoints, by [DB.Checkpoint], and when the DB is closed (see "Closing
// and reopening"). With both sync levels, a checkpoint syncs the log before
// it writes to the database file, and the database file before the log can
// be reused. [DB.IntegrityCheck] and [CheckFile] run PRAGMA integrity_check
// and report a damaged file with [ErrCorrupt].
//
// # Creating a file
//
// Open creates a missing file by writing it directly as an empty database
// in WAL mode (one page, byte for byte what SQLite writes when it converts
// an empty file), instead of letting SQLite convert it, which is a
// rollback-journal transaction: a -journal file created, written, synced
// and removed, and the database file synced. The connection then opens,
// creates the -wal and -shm files, and applies the migrations. A -wal,
// -shm or -journal file found beside the missing database file (the file
// removed by hand while its log was kept, say) is removed first: SQLite
// discards the log of an empty file, and the file Open writes is not empty.
//
// With [SyncNormal] none of this syncs anything: the file is written and
// migrated with synchronous = OFF, without which SQLite would sync the new
// log's header at its first commit (it does for every log it starts, even
// with NORMAL), and the directory with it. Nothing in a new file can have
// been acknowledged yet, so a power loss before the first sync loses
// nothing that was promised: with the actors runtime's barrier, no reply
// leaves before a sync of the whole file system, which covers the file,
// its log and their directory entries; with NORMAL alone, losing the last
// commits on power loss is the documented risk. What such a power loss
// leaves is an empty database, or one without its migrations, which the
// next Open migrates again; a log header that did not reach the disk makes
// the log empty, which is harmful only when old frames follow it, and a
// new log has none. One assumption remains: that a power loss does not
// leave a new file's first page torn (ext4 with data=ordered, the default,
// XFS and btrfs commit a new file's size only once its data is written).
//
// With [SyncFull], the new file and its directory are synced before Open
// returns, and the log's header and every commit are synced as usual.
//
// # Closing and reopening
//
// [DB.Close] leaves a file whole: it runs PRAGMA wal_checkpoint(TRUNCATE),
// waiting up to the busy timeout for readers of other connections, and
// closes the connection, so that SQLite removes the -wal and -shm files and
// the database file alone holds the data. That suits a file that stays
// closed, or is copied.
//
// [DB.CloseKeepLog] suits a file that will be opened again soon (the actors
// runtime uses it for a part that is passivated or restarted). It runs
// PRAGMA wal_checkpoint(PASSIVE), which copies every commit into the
// database file (syncing the log before and the database file after, as
// any checkpoint), tells SQLite to keep the log (SQLITE_FCNTL_PERSIST_WAL),
// and closes. The next Open then saves:
//
//   - removing the -wal and -shm files at close and creating them again at
//     open (on the development machine's virtual disk an unlink costs
//     about 0.2 ms, a create about 0.1 ms);
//   - a sync at the first write. SQLite starts the log again (from its
//     beginning, with a new header that it syncs, even with NORMAL, and the
//     log's directory with it on a connection's first sync) whenever a
//     transaction writes while every frame of the log has been
//     checkpointed. A connection that opens a file no other connection has
//     open rebuilds the log's index from the frames it finds and counts
//     none of them as checkpointed, so as long as the log holds a frame,
//     the first write appends to it. CloseKeepLog therefore leaves at least
//     one frame: an empty log (emptied by [DB.Checkpoint], say) is given
//     one at close, a write of the schema version with its own value, which
//     pays the header's sync there rather than at the next open.
//
// The price is paid elsewhere. Rebuilding the index reads every frame of
// the log (a few microseconds each), and each close copies them all into
// the database file again, so the kept log is bounded: beyond 16 frames or
// 1 MiB it is truncated and started again at close (one more sync then).
// The first connection to a file still resets its -shm file (about 0.1 ms).
// PRAGMA journal_size_limit is not used: with a kept log, SQLite truncates
// the log to that size at close, and a limit of zero means an empty log,
// hence a synced header at the next write. A close that finds a reader of
// another connection holding an old snapshot leaves the log as it is
// instead of waiting for the reader, as Close does: the commits that could
// not be copied stay in the log, where every later connection finds them.
//
// What this means for tools: a file closed with CloseKeepLog has its -wal
// and -shm files beside it, as a live file does, and a connection that
// opens it (a read-only DB, the sqlite3 shell) reads the log too; the
// database file alone holds every commit unless a reader held the log at
// close. [DB.Backup], which copies through SQLite, is always right. Never
// replace a database file while a -wal file of its previous content lies
// beside it: SQLite would apply that log to the new file. Remove the -wal
// and -shm files with it, or open the file and Close it first.
//
// PRAGMA locking_mode = EXCLUSIVE was considered and is not used. It keeps
// the log's index in private memory (no -shm file, no reset at open, and a
// small transaction costs about 30 µs instead of 45 µs), but it holds the
// file locked while the connection is open, so that no other connection,
// read-only ones included, can read a live file: the fractal command,
// System.Children and the inspection page all do.
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
