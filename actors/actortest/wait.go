package actortest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
)

// Poll calls cond until it returns true or total (of the wall clock) has
// passed, and reports whether cond returned true. It calls cond at least
// once, then every interval; an interval of 0 starts at a millisecond and
// doubles up to 50 ms. Tests that must fail use Eventually or CheckFor;
// Poll is for a test that goes on after the bound, to report how far it
// got.
func Poll(total, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(total)
	delay := interval
	if delay <= 0 {
		delay = time.Millisecond
	}
	for {
		if cond() {
			return true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		time.Sleep(min(delay, left))
		if interval <= 0 {
			delay = min(2*delay, 50*time.Millisecond)
		}
	}
}

// Eventually calls cond until it returns true, failing the test if it has
// not within Timeout.
func Eventually(t testing.TB, cond func() bool) {
	t.Helper()
	if !Poll(Timeout, 0, cond) {
		t.Fatalf("actortest: condition not met within %v", Timeout)
	}
}

// CheckFor calls fn every interval (0: as Poll) until it returns nil,
// failing the test with fn's last error if total passes first. The error
// says what was still missing:
//
//	actortest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
//		if n := balance(); n != want {
//			return fmt.Errorf("balance %d, want %d", n, want)
//		}
//		return nil
//	})
func CheckFor(t testing.TB, total, interval time.Duration, fn func() error) {
	t.Helper()
	var err error
	if !Poll(total, interval, func() bool { err = fn(); return err == nil }) {
		t.Fatalf("actortest: not within %v: %v", total, err)
	}
}

// WaitDelivered waits until the parts at paths have delivered every
// durable message they sent (System.Undelivered is 0 for each), failing
// the test if one still has some after Timeout. It asks each part, which
// activates it; an error of the request (a part restarting) is retried
// and reported if it lasts. With a fake Clock, a delivery that failed is
// tried again only once the test advances the Clock past its backoff.
func WaitDelivered(t testing.TB, sys *actors.System, paths ...string) {
	t.Helper()
	CheckFor(t, Timeout, 0, func() error {
		for _, p := range paths {
			ctx, cancel := context.WithTimeout(context.Background(), Timeout)
			n, err := sys.Undelivered(ctx, p)
			cancel()
			if err != nil {
				return fmt.Errorf("undelivered messages of %s: %w", p, err)
			}
			if n > 0 {
				return fmt.Errorf("%s has %d durable messages undelivered", p, n)
			}
		}
		return nil
	})
}

// WaitDelivered is the package's WaitDelivered on the Harness's System.
func (h *Harness) WaitDelivered(paths ...string) {
	h.t.Helper()
	WaitDelivered(h.t, h.sys, paths...)
}
