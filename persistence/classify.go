package persistence

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"modernc.org/sqlite"
)

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
