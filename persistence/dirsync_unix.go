//go:build !windows && !plan9 && !js && !wasip1

package persistence

// syncDir flushes the directory entries of dir to stable storage, so that a
// file created in it survives a power loss.
func syncDir(dir string) error { return SyncFile(dir) }
