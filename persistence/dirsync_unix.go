//go:build !windows && !plan9 && !js && !wasip1

package persistence

import "os"

// syncDir flushes the directory entries of dir to stable storage, so that a
// file created in it survives a power loss.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
