package persistence_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

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

// The cost of bringing a file into use (Open and its first write
// transaction: what a part's activation pays) and of closing it again, for a
// file that does not exist yet (create) and for one that does (reopen), as
// p50 and p99 over b.N files. Files are closed with Close, or with
// CloseKeepLog (keep-log).
func BenchmarkOpenFirstWrite(b *testing.B) {
	schema := []persistence.Migration{{SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`}}
	write := func(db *persistence.DB) error {
		return db.Update(context.Background(), func(tx *persistence.Tx) error {
			_, err := tx.Exec(`UPDATE counter SET n = n + 1`)
			return err
		})
	}
	for _, c := range []struct {
		mode    persistence.SyncMode
		keepLog bool
	}{{persistence.SyncNormal, false}, {persistence.SyncNormal, true}, {persistence.SyncFull, false}, {persistence.SyncFull, true}} {
		name := c.mode.String()
		closeDB := (*persistence.DB).Close
		if c.keepLog {
			name += "/keep-log"
			closeDB = (*persistence.DB).CloseKeepLog
		}
		mode := c.mode
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			opts := &persistence.Options{Sync: mode, Migrations: schema}
			n := max(b.N, 20)
			files := make([]string, n)
			var open, closing []time.Duration
			cycle := func(i int) {
				start := time.Now()
				db, err := persistence.Open(ctx, files[i], opts)
				if err == nil {
					err = write(db)
				}
				if err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := closeDB(db); err != nil {
					b.Fatal(err)
				}
				open = append(open, mid.Sub(start))
				closing = append(closing, time.Since(mid))
			}
			for i := range files {
				files[i] = filepath.Join(dir, fmt.Sprintf("f%d.db", i))
				cycle(i)
			}
			b.ReportMetric(pct(open, 0.5), "create-p50-µs")
			open, closing = open[:0], closing[:0]
			for i := range files {
				cycle(i)
			}
			b.ReportMetric(pct(open, 0.5), "reopen-p50-µs")
			b.ReportMetric(pct(open, 0.99), "reopen-p99-µs")
			b.ReportMetric(pct(closing, 0.5), "close-p50-µs")
		})
	}
}

// pct returns the p-th quantile of ds in microseconds, sorting ds.
func pct(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(p*float64(len(ds)-1))].Microseconds())
}
