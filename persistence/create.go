package persistence

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"

	sqlite3 "modernc.org/sqlite/lib"
)

// newFilePageSize is the page size of a database created by Open: SQLite's
// default, which a new file gets when nothing else is asked for before its
// first write.
const newFilePageSize = 4096

// emptyWALDatabase returns the content of a new, empty database in WAL
// mode: the one page that SQLite writes when PRAGMA journal_mode=WAL
// converts an empty file (the database header, then the empty b-tree of the
// schema table). The schema format and the text encoding stay zero until
// the first table is created, as SQLite leaves them.
// TestNewFileIsWhatSQLiteWrites compares it with SQLite's.
//
// Writing it directly spares a new file SQLite's conversion, which is a
// rollback-journal transaction of its own: a -journal file created, written
// and removed, around the page written here.
func emptyWALDatabase() []byte {
	b := make([]byte, newFilePageSize)
	copy(b, "SQLite format 3\x00")
	binary.BigEndian.PutUint16(b[16:], newFilePageSize)
	b[18], b[19] = 2, 2                                               // write and read versions: WAL
	b[21], b[22], b[23] = 64, 32, 32                                  // payload fractions (fixed values)
	binary.BigEndian.PutUint32(b[24:], 1)                             // file change counter
	binary.BigEndian.PutUint32(b[28:], 1)                             // size in pages
	binary.BigEndian.PutUint32(b[92:], 1)                             // version-valid-for: the change counter
	binary.BigEndian.PutUint32(b[96:], sqlite3.SQLITE_VERSION_NUMBER) // the library that wrote it
	b[100] = 0x0d                                                     // page 1: a table b-tree leaf, no cell
	binary.BigEndian.PutUint16(b[105:], newFilePageSize)              // where cell content starts: the end
	return b
}

// createFile creates the database file at path with the content of an
// empty database in WAL mode, syncing it when sync is set. It reports false,
// and no error, when the file exists already (another Open created it
// meanwhile): the caller opens it as an existing file. On error nothing is
// left at path.
//
// A log, index or rollback journal left beside the missing file (its
// database file removed by hand while DB.CloseKeepLog kept its log, say) is
// removed first. SQLite discards the log of an empty file, but the file
// written here is not empty: the log of another database would be applied
// to it. They are removed before the file is created, so no connection
// finds the new file beside them; like everything that writes, this
// assumes a single writing DB per file (two DBs creating the same file at
// once are not supported).
func createFile(path string, sync bool) (bool, error) {
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = f.Write(emptyWALDatabase())
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return false, err
	}
	return true, nil
}
