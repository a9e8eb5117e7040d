package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// A callback never runs before a sync that started after it was handed
// over has returned.
func TestBarrierRunsCallbacksAfterALaterSync(t *testing.T) {
	var (
		started  = make(chan int, 10) // sync number, when a sync starts
		release  = make(chan struct{}, 10)
		returned atomic.Int64 // syncs that have returned
	)
	b := persistence.NewBarrierFunc(func() error {
		n := int(returned.Load()) + 1
		started <- n
		<-release
		returned.Add(1)
		return nil
	})
	defer b.Close()

	ran := make(chan int64, 10) // the number of returned syncs seen by each callback
	b.After(func(err error) {
		if err != nil {
			t.Error(err)
		}
		ran <- returned.Load()
	})
	if n := <-started; n != 1 {
		t.Fatalf("first sync is #%d", n)
	}
	// Handed over while sync #1 runs: it must wait for sync #2.
	b.After(func(error) { ran <- returned.Load() })
	select {
	case <-ran:
		t.Fatal("a callback ran while its sync was still running")
	case <-time.After(20 * time.Millisecond):
	}
	release <- struct{}{}
	if got := <-ran; got != 1 {
		t.Fatalf("first callback saw %d finished syncs, want 1", got)
	}
	if n := <-started; n != 2 {
		t.Fatalf("second sync is #%d", n)
	}
	select {
	case <-ran:
		t.Fatal("the second callback ran on the sync that was already running when it was handed over")
	case <-time.After(20 * time.Millisecond):
	}
	release <- struct{}{}
	if got := <-ran; got != 2 {
		t.Fatalf("second callback saw %d finished syncs, want 2", got)
	}
	if b.Syncs() != 2 {
		t.Fatalf("Syncs = %d, want 2", b.Syncs())
	}
}

// Many callbacks handed over during one sync share the next one.
func TestBarrierSharesOneSync(t *testing.T) {
	gate := make(chan struct{})
	started := make(chan struct{})
	var calls atomic.Int64
	b := persistence.NewBarrierFunc(func() error {
		if calls.Add(1) == 1 {
			close(started)
			<-gate
		}
		return nil
	})
	defer b.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	b.After(func(error) { wg.Done() })
	<-started // the first sync is under way
	const n = 100
	wg.Add(n)
	for range n {
		b.After(func(error) { wg.Done() })
	}
	close(gate)
	wg.Wait()
	if got := calls.Load(); got != 2 {
		t.Fatalf("%d syncs for 1+%d callbacks, want 2", got, n)
	}
}

func TestBarrierSyncError(t *testing.T) {
	boom := errors.New("EIO")
	b := persistence.NewBarrierFunc(func() error { return boom })
	defer b.Close()
	if err := b.Wait(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want the sync's error", err)
	}
}

func TestBarrierCloseRunsPendingAndRefusesNew(t *testing.T) {
	gate := make(chan struct{})
	b := persistence.NewBarrierFunc(func() error { <-gate; return nil })
	results := make(chan error, 2)
	b.After(func(err error) { results <- err })
	b.After(func(err error) { results <- err })
	closed := make(chan error)
	go func() { closed <- b.Close() }()
	close(gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("pending callback got %v", err)
		}
	}
	var got error
	b.After(func(err error) { got = err })
	if !errors.Is(got, persistence.ErrClosed) {
		t.Fatalf("After on a closed barrier: %v, want ErrClosed", got)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestTxWrote(t *testing.T) {
	db := openTestDB(t, nil)
	mustUpdate(t, db, execAll(`CREATE TABLE t (x INTEGER)`, `INSERT INTO t VALUES (1)`))
	commit := func(stmts ...string) bool {
		t.Helper()
		tx, err := db.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := execAll(stmts...)(tx); err != nil {
			t.Fatal(err)
		}
		if tx.Wrote() {
			t.Fatal("Wrote is true before Commit")
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return tx.Wrote()
	}
	if commit(`SELECT x FROM t`) {
		t.Error("a read-only transaction wrote")
	}
	if commit() {
		t.Error("an empty transaction wrote")
	}
	if !commit(`UPDATE t SET x = x + 1`) {
		t.Error("an update did not write")
	}
	if !commit(`CREATE TABLE u (y)`) {
		t.Error("a schema change did not write")
	}
	if commit(`SELECT count(*) FROM u`) {
		t.Error("a read after writes wrote")
	}
}

// The statement cache is bounded; evicting statements while rows of theirs
// are open must neither break those rows nor crash when the rows, or the
// DB, are closed later.
func TestStatementCacheEvictionWithOpenRows(t *testing.T) {
	db := openTestDB(t, nil)
	mustUpdate(t, db, execAll(`CREATE TABLE t (x INTEGER)`, `INSERT INTO t VALUES (1), (2), (3)`))
	for round := range 3 {
		tx, err := db.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(`SELECT x FROM t ORDER BY x`)
		if err != nil {
			t.Fatal(err)
		}
		if !rows.Next() {
			t.Fatal("no first row")
		}
		unscanned := tx.QueryRow(`SELECT count(*) FROM t`) // never scanned
		_ = unscanned
		for i := range 300 { // more distinct statements than the cache holds
			var v int
			if err := tx.QueryRow(fmt.Sprintf(`SELECT %d + x FROM t WHERE x = 1`, i+round*1000)).Scan(&v); err != nil || v != i+round*1000+1 {
				t.Fatalf("query %d: %v, %v", i, v, err)
			}
		}
		var xs []int
		for {
			var x int
			if err := rows.Scan(&x); err != nil {
				t.Fatal(err)
			}
			xs = append(xs, x)
			if !rows.Next() {
				break
			}
		}
		if fmt.Sprint(xs) != "[1 2 3]" {
			t.Fatalf("rows read across evictions: %v", xs)
		}
		if _, err := tx.Exec(`UPDATE t SET x = x`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}
