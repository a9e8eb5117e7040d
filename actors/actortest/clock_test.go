package actortest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fractalrt/fractal/actors/actortest"
)

// recorder notes which callbacks ran and what the clock said then.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) note(clk *actortest.Clock, name string) func() {
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got = append(r.got, fmt.Sprintf("%s@%v", name, clk.Now().Sub(actortest.Epoch)))
	}
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	got := r.got
	r.got = nil
	return got
}

func TestClockStartsWhereTold(t *testing.T) {
	if got := actortest.NewClock(time.Time{}).Now(); !got.Equal(actortest.Epoch) {
		t.Fatalf("zero start: %v, want Epoch %v", got, actortest.Epoch)
	}
	start := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	clk := actortest.NewClock(start)
	if got := clk.Now(); !got.Equal(start) {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	clk.Advance(-time.Hour)
	if got := clk.Now(); !got.Equal(start) {
		t.Fatalf("after Advance(-1h): %v, want %v (the clock never goes back)", got, start)
	}
}

// Due callbacks run in due order (ties in arming order), each with Now at
// its due time, all before Advance returns; later ones wait.
func TestClockFiresInDueOrder(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	var r recorder
	clk.AfterFunc(30*time.Millisecond, r.note(clk, "c"))
	clk.AfterFunc(10*time.Millisecond, r.note(clk, "a1"))
	clk.AfterFunc(20*time.Millisecond, r.note(clk, "b"))
	clk.AfterFunc(10*time.Millisecond, r.note(clk, "a2"))
	if n := clk.Pending(); n != 4 {
		t.Fatalf("Pending = %d, want 4", n)
	}
	clk.Advance(9 * time.Millisecond)
	if got := r.take(); len(got) != 0 {
		t.Fatalf("fired before due: %v", got)
	}
	clk.Advance(16 * time.Millisecond) // to 25 ms
	if got, want := r.take(), []string{"a1@10ms", "a2@10ms", "b@20ms"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if got := clk.Now().Sub(actortest.Epoch); got != 25*time.Millisecond {
		t.Fatalf("Now after the advance: +%v, want +25ms", got)
	}
	if d, ok := clk.Next(); !ok || d != 5*time.Millisecond {
		t.Fatalf("Next = %v, %v; want 5ms, true", d, ok)
	}
	clk.Advance(time.Hour)
	if got, want := r.take(), []string{"c@30ms"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if _, ok := clk.Next(); ok || clk.Pending() != 0 {
		t.Fatalf("%d timers pending after all fired", clk.Pending())
	}
}

// A timer armed by a callback fires in the same advance if it is due
// within it.
func TestClockFiresTimersArmedDuringAdvance(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	var r recorder
	var tick func()
	tick = func() {
		r.note(clk, "tick")()
		clk.AfterFunc(10*time.Millisecond, tick)
	}
	clk.AfterFunc(10*time.Millisecond, tick)
	clk.Advance(35 * time.Millisecond)
	if got, want := r.take(), []string{"tick@10ms", "tick@20ms", "tick@30ms"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if d, ok := clk.Next(); !ok || d != 5*time.Millisecond {
		t.Fatalf("the next tick in %v, %v; want 5ms", d, ok)
	}
}

func TestClockStop(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	var r recorder
	stopped := clk.AfterFunc(10*time.Millisecond, r.note(clk, "stopped"))
	kept := clk.AfterFunc(10*time.Millisecond, r.note(clk, "kept"))
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if stopped.Stop() {
		t.Fatal("a second Stop reported true")
	}
	clk.Advance(10 * time.Millisecond)
	if got, want := r.take(), []string{"kept@10ms"}; !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if kept.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
}

// A callback due at once runs without an advance, on a goroutine of its
// own: its caller may hold a lock the callback takes.
func TestClockRunsZeroDelayAtOnce(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	var mu sync.Mutex
	ran := make(chan struct{})
	mu.Lock()
	clk.AfterFunc(0, func() {
		mu.Lock()
		defer mu.Unlock()
		close(ran)
	})
	mu.Unlock()
	<-ran
	if clk.Pending() != 0 {
		t.Fatal("a timer of no delay is pending")
	}
}

// WaitTimer returns once a timer due soon enough is armed, not for a later
// one, and fails the test when none comes.
func TestClockWaitTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := actortest.NewClock(time.Time{})
		clk.AfterFunc(time.Hour, func() {})
		returned := make(chan struct{})
		go func() {
			clk.WaitTimer(t, 10*time.Millisecond)
			close(returned)
		}()
		synctest.Wait()
		select {
		case <-returned:
			t.Fatal("WaitTimer(10ms) returned for a timer due in an hour")
		default:
		}
		clk.AfterFunc(10*time.Millisecond, func() {})
		<-returned

		var ft fakeT
		ft.run(func() { actortest.NewClock(time.Time{}).WaitTimer(&ft, time.Second) })
		if !ft.failed {
			t.Fatal("WaitTimer with no timer coming did not fail the test")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := actortest.NewClock(time.Time{}).BlockUntilDue(ctx, time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("BlockUntilDue with no timer: %v, want the context's error", err)
		}
	})
}

// WaitTimerAt waits for a timer due exactly then: not for an earlier one
// (the runtime's periodic ticks), nor a later one.
func TestClockWaitTimerAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := actortest.NewClock(time.Time{})
		clk.AfterFunc(time.Second, func() {})
		clk.AfterFunc(time.Hour, func() {})
		returned := make(chan struct{})
		go func() {
			clk.WaitTimerAt(t, time.Minute)
			close(returned)
		}()
		synctest.Wait()
		select {
		case <-returned:
			t.Fatal("WaitTimerAt(1m) returned for timers due in a second and in an hour")
		default:
		}
		clk.AfterFunc(time.Minute, func() {})
		<-returned
	})
}

// The clock is safe for concurrent use: arming, stopping and advancing
// from several goroutines (run under the race detector).
func TestClockConcurrentUse(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	var fired sync.WaitGroup
	var wg sync.WaitGroup
	const arming, each = 4, 200
	fired.Add(arming * each / 2)
	for g := range arming {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				tm := clk.AfterFunc(time.Duration(1+(g*each+i)%50)*time.Millisecond, func() {})
				if i%2 == 0 {
					tm.Stop()
				} else {
					clk.AfterFunc(time.Duration(1+i%50)*time.Millisecond, fired.Done)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 100 {
			clk.Advance(time.Millisecond)
		}
	}()
	wg.Wait()
	clk.Advance(time.Second)
	fired.Wait()
}

func TestPollAndCheckFor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		n := 0
		if !actortest.Poll(time.Second, 10*time.Millisecond, func() bool { n++; return n == 3 }) {
			t.Fatal("Poll gave up on a condition met at the third call")
		}
		if took := time.Since(start); took != 20*time.Millisecond {
			t.Fatalf("three calls 10 ms apart took %v", took)
		}
		if actortest.Poll(time.Second, 0, func() bool { return false }) {
			t.Fatal("Poll reported a condition never met")
		}
		if took := time.Since(start); took != 20*time.Millisecond+time.Second {
			t.Fatalf("Poll gave up after %v, want its bound, 1s", took-20*time.Millisecond)
		}

		var ft fakeT
		ft.run(func() {
			actortest.CheckFor(&ft, time.Second, 0, func() error { return errors.New("still 2, want 3") })
		})
		if !ft.failed || ft.msg != "actortest: not within 1s: still 2, want 3" {
			t.Fatalf("CheckFor failed %v with %q", ft.failed, ft.msg)
		}
	})
}

// fakeT records a failure instead of ending the test.
type fakeT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	panic(f)
}

// run runs fn, which may end with f.Fatalf.
func (f *fakeT) run(fn func()) {
	defer func() {
		if v := recover(); v != nil && v != f {
			panic(v)
		}
	}()
	fn()
}
