package main

import (
	"strings"
	"testing"
)

// fractal move checks its arguments before it asks etcd anything; the move
// itself is tested against three node processes in package cluster.
func TestMoveArguments(t *testing.T) {
	if code, _, errs := fractal(t, "move", "mail/a.org"); code != 2 || !strings.Contains(errs, "want SUBTREE NODE") {
		t.Fatalf("move with one argument: %d %s", code, errs)
	}
	code, _, errs := fractal(t, "move", "-etcd", "127.0.0.1:1", "-timeout", "2s", "mail/../etc", "n2")
	if code != 1 || !strings.Contains(errs, "invalid path") {
		t.Fatalf("move of an invalid path: %d %s", code, errs)
	}
}
