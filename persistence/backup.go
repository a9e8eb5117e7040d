package persistence

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	sqlite "modernc.org/sqlite"
)

// Backup copies the database, as of one consistent moment, into a new file
// at dest, with SQLite's online backup API. It works on a read-only DB, and
// while other connections (a running system) keep writing the file: the copy
// is a snapshot taken under a read transaction, never a torn mix. dest must
// not exist; its directory must. The copy is synced and checked with
// CheckFile before Backup returns; on any error dest is removed.
//
// It waits for the current transaction of db to end.
func (db *DB) Backup(ctx context.Context, dest string) (err error) {
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("persistence: backup %s: %s: %w", db.path, dest, fs.ErrExist)
	}
	if err := db.acquire(ctx); err != nil {
		return wrapAcquire("backup", err)
	}
	defer db.release()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}
	defer func() {
		if err != nil {
			os.Remove(dest)
			err = fmt.Errorf("persistence: backup %s to %s: %w", db.path, dest, err)
		}
	}()
	uri, err := fileURI(dest, false)
	if err != nil {
		return err
	}
	type backuper interface {
		NewBackup(string) (*sqlite.Backup, error)
	}
	err = db.conn.Raw(func(dc any) error {
		b, ok := dc.(backuper)
		if !ok {
			return fmt.Errorf("driver connection %T cannot back up", dc)
		}
		bk, err := b.NewBackup(uri)
		if err != nil {
			return classify(err)
		}
		// All pages in one step: one read transaction, one snapshot.
		_, stepErr := bk.Step(-1)
		return errors.Join(classify(stepErr), classify(bk.Finish()))
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(dest, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		return serr
	}
	if err := CheckFile(ctx, dest); err != nil {
		return err
	}
	// The read-only check leaves an empty log and shared-memory file
	// beside the copy (it may not checkpoint): nothing else uses the new
	// file yet, so they can go.
	for _, suffix := range []string{"-wal", "-shm"} {
		if fi, err := os.Stat(dest + suffix); err == nil && (suffix == "-shm" || fi.Size() == 0) {
			os.Remove(dest + suffix)
		}
	}
	return nil
}
