//go:build windows || plan9 || js || wasip1

package persistence

// lowSpace cannot tell on this platform.
func lowSpace(string) bool { return false }
