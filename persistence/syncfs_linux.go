package persistence

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS syncs the whole file system that holds f (syncfs(2)).
func syncFS(f *os.File) error {
	return unix.Syncfs(int(f.Fd()))
}
