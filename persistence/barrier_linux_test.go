package persistence_test

import (
	"context"
	"testing"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

func TestBarrierOnRealFileSystem(t *testing.T) {
	dir := t.TempDir()
	b, err := persistence.NewBarrier(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	db := openTestDB(t, &persistence.Options{Sync: persistence.SyncNormal})
	mustUpdate(t, db, execAll(`CREATE TABLE t (x)`, `INSERT INTO t VALUES (1)`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Syncs() != 1 {
		t.Fatalf("Syncs = %d", b.Syncs())
	}
}
