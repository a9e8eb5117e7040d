package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pgTable is the table the postgres systems create (and drop when done) in
// the database named by -postgres.
const pgTable = "fractal_bench_counter"

// postgres keeps every counter in one table of a PostgreSQL database, one
// transaction per message over a pgxpool of poolSize connections.
// synchronousCommit is set on every session: "on" waits for the WAL flush
// before COMMIT returns, "off" does not.
type postgres struct {
	dsn               string
	poolSize          int
	synchronousCommit string

	pool *pgxpool.Pool
	txCounters
}

func (p *postgres) setup(ctx context.Context, _ string, parts int) error {
	cfg, err := pgxpool.ParseConfig(p.dsn)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	cfg.MaxConns = int32(p.poolSize)
	cfg.MinConns = int32(p.poolSize)
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = p.synchronousCommit
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	p.pool = pool
	var got string
	if err := pool.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&got); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if got != p.synchronousCommit {
		return fmt.Errorf("postgres: synchronous_commit is %q, want %q", got, p.synchronousCommit)
	}
	for _, stmt := range []string{
		`DROP TABLE IF EXISTS ` + pgTable,
		`CREATE TABLE ` + pgTable + ` (id integer PRIMARY KEY, n bigint NOT NULL)`,
		fmt.Sprintf(`INSERT INTO %s (id, n) SELECT i, 0 FROM generate_series(0, %d) AS i`, pgTable, parts-1),
		`VACUUM ANALYZE ` + pgTable,
	} {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("postgres: %s: %w", stmt, err)
		}
	}
	return nil
}

func (p *postgres) rmw(ctx context.Context, part int, _ *int64) (int64, error) {
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT n FROM `+pgTable+` WHERE id = $1`, part).Scan(&n); err != nil {
		_ = tx.Rollback(ctx)
		return 0, err
	}
	n++
	if _, err := tx.Exec(ctx, `UPDATE `+pgTable+` SET n = $1 WHERE id = $2`, n, part); err != nil {
		_ = tx.Rollback(ctx)
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	p.committed()
	return n, nil
}

func (p *postgres) sum(ctx context.Context) (int64, bool, error) {
	var total int64
	if err := p.pool.QueryRow(ctx, `SELECT COALESCE(SUM(n), 0)::bigint FROM `+pgTable).Scan(&total); err != nil {
		return 0, true, fmt.Errorf("postgres: sum: %w", err)
	}
	return total, true, nil
}

func (p *postgres) close() error {
	_, err := p.pool.Exec(context.Background(), `DROP TABLE IF EXISTS `+pgTable)
	p.pool.Close()
	return err
}
