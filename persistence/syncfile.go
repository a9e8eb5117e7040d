package persistence

import "os"

// SyncFile flushes the file or directory at path to stable storage: for a
// directory, the entries created or renamed in it. On platforms that cannot
// sync a directory it fails for one; use it for directories only where
// directories can be synced (Linux and the other Unix systems).
func SyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
