//go:build !unix

package main

import "errors"

// lockData cannot tell here whether a system runs on dir: restore refuses.
func lockData(dir string) (func(), error) {
	return nil, errors.New("restore: cannot lock the data directory on this platform")
}
