//go:build windows || plan9 || js || wasip1

package persistence

// syncDir does nothing on platforms that offer no way to sync a directory.
// On Windows, NTFS journals directory changes itself.
func syncDir(string) error { return nil }
