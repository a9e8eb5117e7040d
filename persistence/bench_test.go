package persistence_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

// The cost of SQLite alone for the workload of the actors benchmarks: a
// read-modify-write of one row, one transaction each.
func BenchmarkReadModifyWrite(b *testing.B) {
	for _, mode := range []persistence.SyncMode{persistence.SyncNormal, persistence.SyncFull} {
		b.Run(mode.String(), func(b *testing.B) {
			db, err := persistence.Open(context.Background(), filepath.Join(b.TempDir(), "b.db"), &persistence.Options{
				Sync:       mode,
				Migrations: []persistence.Migration{{SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`}},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				tx, err := db.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				var n int
				if err := tx.QueryRow(`SELECT n FROM counter`).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if _, err := tx.Exec(`UPDATE counter SET n = ?`, n+1); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
