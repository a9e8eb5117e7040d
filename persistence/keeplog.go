package persistence

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"modernc.org/sqlite"
)

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
