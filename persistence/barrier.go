package persistence

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A Barrier makes the commits of many files durable together, with one
// sync of their file system instead of one fsync per file per commit.
//
// The files are opened with [SyncNormal]: a commit writes the write-ahead
// log without syncing it, which survives a crash of the process but not a
// power loss. After the commit, the caller hands the Barrier what must wait
// for durability (replies, messages to send) with [Barrier.After]. The
// Barrier's goroutine repeatedly takes everything handed to it, syncs the
// file system once (syncfs(2) on Linux: every dirty page and every metadata
// change of that file system, the logs of all the files included), and only
// then runs the callbacks. Commits that arrive while a sync runs are taken
// by the next one, so the cost of one sync is shared by every commit made
// during the previous one.
//
// Why it is safe: a callback passed to After is run only after a sync that
// started after After was called, hence after the commit, whose log frames
// were written before. Once that sync returns, those frames (and the log's
// header, and the directory entries of new files) are on stable storage;
// if the power fails before, the commit may be lost, but nothing that
// depended on it was released. SQLite's checkpoints in SyncNormal mode sync
// the log before copying it into the database and sync the database before
// the log is reused, so a checkpoint never loses a synced commit.
type Barrier struct {
	sync func() error
	dir  *os.File // nil for NewBarrierFunc

	mu      sync.Mutex
	waiting []func(error) // handed over since the last sync started
	closed  bool

	wake  chan struct{} // capacity 1: there is work
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	syncs atomic.Uint64

	observe atomic.Pointer[func(d time.Duration, err error)] // see OnSync
}

// NewBarrier returns a Barrier for the file system holding dir. It is only
// available where the operating system can sync one file system (Linux's
// syncfs); elsewhere it returns an error and files should use [SyncFull].
func NewBarrier(dir string) (*Barrier, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("persistence: barrier: %w", err)
	}
	if err := syncFS(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("persistence: barrier on %s: %w", dir, err)
	}
	b := NewBarrierFunc(func() error { return syncFS(f) })
	b.dir = f
	return b, nil
}

// NewBarrierFunc returns a Barrier that calls sync to make the pending
// commits durable. sync must not return before every write issued before
// it was called is on stable storage. It serves file systems that need
// another method than NewBarrier's, and tests.
func NewBarrierFunc(sync func() error) *Barrier {
	b := &Barrier{
		sync: sync,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go b.loop()
	return b
}

// After arranges for fn to run once a sync that started after this call has
// completed, with that sync's error (nil when the commits made before the
// call are durable). Callbacks run one at a time on the Barrier's goroutine,
// in the order they were handed over; they must not block. After a Barrier
// is closed, fn runs at once with [ErrClosed].
//
// The callbacks waiting at any time are the commits made during one sync:
// their number is bounded by the work the callers let into flight.
func (b *Barrier) After(fn func(err error)) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		fn(ErrClosed)
		return
	}
	b.waiting = append(b.waiting, fn)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Wait blocks until the commits made before the call are durable, or ctx is
// done.
func (b *Barrier) Wait(ctx context.Context) error {
	ch := make(chan error, 1)
	b.After(func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// OnSync sets fn to be called on the Barrier's goroutine after each sync,
// with its duration and error, before that sync's callbacks run. It is for
// metrics: fn must be quick and must not block. A nil fn removes it.
func (b *Barrier) OnSync(fn func(d time.Duration, err error)) {
	if fn == nil {
		b.observe.Store(nil)
		return
	}
	b.observe.Store(&fn)
}

// Syncs returns the number of syncs done so far.
func (b *Barrier) Syncs() uint64 { return b.syncs.Load() }

// Close runs a last sync for the callbacks handed over before it, waits for
// them, and stops the Barrier. It is safe to call twice.
func (b *Barrier) Close() error {
	b.once.Do(func() {
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		close(b.stop)
	})
	<-b.done
	if b.dir != nil {
		f := b.dir
		b.dir = nil
		return f.Close()
	}
	return nil
}

func (b *Barrier) loop() {
	defer close(b.done)
	var spare []func(error)
	for {
		select {
		case <-b.wake:
		case <-b.stop:
			b.round(nil) // the last callbacks, handed over before closed was set
			return
		}
		spare = b.round(spare)
	}
}

// round takes the waiting callbacks, syncs, and runs them. It returns the
// emptied slice for reuse.
func (b *Barrier) round(spare []func(error)) []func(error) {
	b.mu.Lock()
	batch := b.waiting
	b.waiting = spare[:0]
	b.mu.Unlock()
	if len(batch) == 0 {
		return batch
	}
	start := time.Now()
	err := b.sync()
	b.syncs.Add(1)
	if fn := b.observe.Load(); fn != nil {
		(*fn)(time.Since(start), err)
	}
	if err != nil {
		err = fmt.Errorf("persistence: barrier sync: %w", err)
	}
	for i, fn := range batch {
		fn(err)
		batch[i] = nil
	}
	return batch
}
