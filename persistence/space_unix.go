//go:build !windows && !plan9 && !js && !wasip1

package persistence

import "syscall"

// lowSpace reports whether the file system holding dir has less than
// lowSpaceBytes available to this process; false when it cannot tell.
func lowSpace(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	return uint64(st.Bavail)*uint64(st.Bsize) < lowSpaceBytes
}
