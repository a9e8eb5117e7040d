package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/fractalrt/fractal/persistence"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, for readImmutable
)

// counterMigrations is the schema of every per-part store: one row.
var counterMigrations = []persistence.Migration{{
	Name: "counter",
	SQL:  `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`,
}}

// floorQueue is the capacity of a floor part's channel.
const floorQueue = 1024

// floor is the cost of SQLite alone, batched like fractal: one goroutine per
// part owns the part's file; requests queue in the part's bounded channel;
// the goroutine takes everything queued, runs it in one transaction, and
// replies to all of it after the commit.
type floor struct {
	dir   string
	parts []*floorPart
	wg    sync.WaitGroup

	messages, commits atomic.Uint64
}

type floorPart struct {
	path string
	in   chan *caller
	db   *persistence.DB // the part goroutine's own; opened on its first message
}

func (f *floor) open(ctx context.Context, dir string, parts int) error {
	f.dir = dir
	f.parts = make([]*floorPart, parts)
	for i := range f.parts {
		p := &floorPart{path: filepath.Join(dir, partName(i)+".db"), in: make(chan *caller, floorQueue)}
		f.parts[i] = p
		f.wg.Add(1)
		go f.run(p)
	}
	return nil
}

func (f *floor) run(p *floorPart) {
	defer f.wg.Done()
	ctx := context.Background()
	batch := make([]*caller, 0, floorQueue)
	vals := make([]int64, 0, floorQueue)
	for first := range p.in {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < cap(batch) {
			select {
			case c, ok := <-p.in:
				if !ok {
					break drain
				}
				batch = append(batch, c)
			default:
				break drain
			}
		}
		vals = vals[:0]
		err := f.apply(ctx, p, batch, &vals)
		for i, c := range batch {
			if err != nil {
				c.reply <- reply{err: err}
			} else {
				c.reply <- reply{n: vals[i]}
			}
		}
	}
	if p.db != nil {
		if err := p.db.Close(); err != nil {
			panic(fmt.Sprintf("floor: close %s: %v", p.path, err))
		}
	}
}

// apply runs batch in one transaction on p's file: a read-modify-write of
// the counter per message.
func (f *floor) apply(ctx context.Context, p *floorPart, batch []*caller, vals *[]int64) error {
	if p.db == nil {
		db, err := persistence.Open(ctx, p.path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: counterMigrations})
		if err != nil {
			return err
		}
		p.db = db
	}
	tx, err := p.db.Begin(ctx)
	if err != nil {
		return err
	}
	for range batch {
		var n int64
		if err := tx.QueryRow(`SELECT n FROM counter`).Scan(&n); err != nil {
			_ = tx.Rollback()
			return err
		}
		n++
		if _, err := tx.Exec(`UPDATE counter SET n = ?`, n); err != nil {
			_ = tx.Rollback()
			return err
		}
		*vals = append(*vals, n)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	f.messages.Add(uint64(len(batch)))
	f.commits.Add(1)
	return nil
}

func (f *floor) call(ctx context.Context, c *caller, part int) (int64, error) {
	select {
	case f.parts[part].in <- c:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (f *floor) stats() (counters, bool) {
	return counters{messages: f.messages.Load(), commits: f.commits.Load()}, true
}

func (f *floor) finish(ctx context.Context) (int64, error) {
	for _, p := range f.parts {
		close(p.in)
	}
	f.wg.Wait()
	files := make([]string, len(f.parts))
	for i, p := range f.parts {
		files[i] = p.path
	}
	return sumFiles(ctx, files)
}

// partName is the name of part i: p0000, p0001, ...
func partName(i int) string { return fmt.Sprintf("p%04d", i) }

// sumFiles opens each per-part file read-only and sums their counters.
func sumFiles(ctx context.Context, files []string) (int64, error) {
	const workers = 8
	var (
		total atomic.Int64
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) {
					return
				}
				n, err := readCounter(ctx, files[i])
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					continue
				}
				total.Add(n)
			}
		}()
	}
	wg.Wait()
	return total.Load(), first
}

// readCounter reads the counter of one closed per-part file. A file closed
// cleanly has no write-ahead log left, so it is read as immutable, which
// creates no -wal or -shm file; otherwise it is opened read-only through
// persistence, which reads the log too.
func readCounter(ctx context.Context, file string) (int64, error) {
	if fi, err := os.Stat(file + "-wal"); errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return readImmutable(ctx, file)
	}
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	var n int64
	err = db.View(ctx, func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT n FROM counter`).Scan(&n)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	return n, nil
}

func readImmutable(ctx context.Context, file string) (int64, error) {
	u := url.URL{Scheme: "file", Path: file, RawQuery: "mode=ro&immutable=1"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	var n int64
	err = db.QueryRowContext(ctx, `SELECT n FROM counter`).Scan(&n)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", file, err)
	}
	return n, nil
}
