//go:build !unix

package actors

import "os"

// lockDir opens the lock file without locking it: on systems without flock
// the application must ensure that one System serves a directory.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

func unlockDir(f *os.File) error { return f.Close() }
