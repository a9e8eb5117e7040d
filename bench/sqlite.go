package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fractalrt/fractal/persistence"
)

// sharedSQLite keeps every counter in one table of one SQLite file
// (synchronous=FULL, WAL), through persistence: its transactions
// serialize, one per message, whatever the number of actors.
type sharedSQLite struct {
	db *persistence.DB
	txCounters
}

func (s *sharedSQLite) setup(ctx context.Context, dir string, parts int) error {
	db, err := persistence.Open(ctx, filepath.Join(dir, "shared.db"), &persistence.Options{
		Sync: persistence.SyncFull,
		Migrations: []persistence.Migration{{
			Name: "counters",
			Func: func(tx *persistence.Tx) error {
				if _, err := tx.Exec(`CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)`); err != nil {
					return err
				}
				for i := range parts {
					if _, err := tx.Exec(`INSERT INTO counter (id, n) VALUES (?, 0)`, i); err != nil {
						return err
					}
				}
				return nil
			},
		}},
	})
	if err != nil {
		return err
	}
	s.db = db
	return nil
}

func (s *sharedSQLite) rmw(ctx context.Context, part int, _ *int64) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := tx.QueryRow(`SELECT n FROM counter WHERE id = ?`, part).Scan(&n); err != nil {
		_ = tx.Rollback()
		return 0, err
	}
	n++
	if _, err := tx.Exec(`UPDATE counter SET n = ? WHERE id = ?`, n, part); err != nil {
		_ = tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	s.committed()
	return n, nil
}

func (s *sharedSQLite) sum(ctx context.Context) (int64, bool, error) {
	var total int64
	err := s.db.View(ctx, func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT COALESCE(SUM(n), 0) FROM counter`).Scan(&total)
	})
	if err != nil {
		return 0, true, fmt.Errorf("shared-sqlite: sum: %w", err)
	}
	return total, true, nil
}

func (s *sharedSQLite) close() error { return s.db.Close() }
