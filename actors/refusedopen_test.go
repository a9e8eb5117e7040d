package actors_test

import (
	"testing"

	"github.com/fractalrt/fractal/actors"
)

// An Open refused for bad options must not keep the directory locked.
func TestRefusedOpenReleasesDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := actors.Open(t.Context(), dir, actors.Options{Kinds: testKinds(), MaxBatch: -1}); err == nil {
		t.Fatal("negative MaxBatch accepted")
	}
	sys, err := actors.Open(t.Context(), dir, actors.Options{Kinds: testKinds()})
	if err != nil {
		t.Fatalf("open after a refused open: %v", err)
	}
	sys.Close(t.Context())
}
