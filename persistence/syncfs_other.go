//go:build !linux

package persistence

import (
	"errors"
	"os"
)

// syncFS is only implemented on Linux; elsewhere use SyncFull.
func syncFS(*os.File) error {
	return errors.New("syncing one file system is not supported on this platform")
}
