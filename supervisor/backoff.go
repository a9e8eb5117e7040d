package supervisor

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Backoff delays restarts exponentially while restarts pile up inside the
// intensity window. The zero value disables it: restarts happen at once.
//
// For the n-th restart still inside the window (n >= 1, counting the one
// being decided) the base delay is
//
//	d = min(Max, Initial * Multiplier^(n-1))
//
// and the jittered delay is d * (1 + Jitter*(2*rnd-1)), which lies in
// [d*(1-Jitter), d*(1+Jitter)] for rnd in [0, 1]. Max caps the base delay;
// the jitter keeps spreading delays at the cap, so a jittered delay can
// exceed Max by up to Jitter*Max. When the window empties, n starts again
// at 1 and so the delay drops back to Initial.
type Backoff struct {
	// Initial is the base delay of the first restart in a window. Zero
	// disables the backoff, and then the other fields must be zero too.
	Initial time.Duration
	// Max caps the base delay; it must be at least Initial.
	Max time.Duration
	// Multiplier is the growth factor per restart; it must be finite and
	// at least 1 (1 gives a constant delay).
	Multiplier float64
	// Jitter is the fraction, in [0, 1], by which the delay is spread
	// around the base delay.
	Jitter float64
}

func (b Backoff) enabled() bool { return b.Initial > 0 }

// Validate reports whether the Backoff can be used. The error, if any, wraps
// ErrInvalidSpec.
func (b Backoff) Validate() error {
	switch {
	case b.Initial < 0:
		return fmt.Errorf("%w: backoff initial %v is negative", ErrInvalidSpec, b.Initial)
	case b.Initial == 0:
		if b != (Backoff{}) {
			return fmt.Errorf("%w: backoff has max, multiplier or jitter but no initial delay", ErrInvalidSpec)
		}
		return nil
	case math.IsNaN(b.Multiplier) || math.IsInf(b.Multiplier, 0) || b.Multiplier < 1:
		return fmt.Errorf("%w: backoff multiplier %v must be finite and at least 1", ErrInvalidSpec, b.Multiplier)
	case b.Max < b.Initial:
		return fmt.Errorf("%w: backoff max %v is less than initial %v", ErrInvalidSpec, b.Max, b.Initial)
	case math.IsNaN(b.Jitter) || b.Jitter < 0 || b.Jitter > 1:
		return fmt.Errorf("%w: backoff jitter %v is outside [0, 1]", ErrInvalidSpec, b.Jitter)
	}
	return nil
}

// Delay returns the delay before the n-th restart inside the window, with
// rnd in [0, 1) choosing the jitter (0.5 gives the base delay). rnd outside
// [0, 1] is clamped and NaN counts as 0.5, so the result is always within
// the documented bounds. Delay returns 0 when the backoff is disabled or
// n < 1. It assumes b is valid (see Validate); a Supervisor only ever uses
// validated backoffs.
func (b Backoff) Delay(n int, rnd float64) time.Duration {
	if !b.enabled() || n < 1 {
		return 0
	}
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(n-1))
	if !(d <= float64(b.Max)) { // also catches +Inf and NaN
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		switch {
		case math.IsNaN(rnd):
			rnd = 0.5
		case rnd < 0:
			rnd = 0
		case rnd > 1:
			rnd = 1
		}
		d *= 1 + b.Jitter*(2*rnd-1)
	}
	d = math.Round(d)
	if d >= float64(math.MaxInt64) { // float64(MaxInt64) is 2^63, one past the range
		return time.Duration(math.MaxInt64)
	}
	if d < 0 {
		return 0
	}
	return time.Duration(d)
}

// String returns "none" for the zero value, and otherwise the fields as
// "initial=100ms max=10s multiplier=2 jitter=0.2".
func (b Backoff) String() string {
	if b == (Backoff{}) {
		return "none"
	}
	return "initial=" + b.Initial.String() +
		" max=" + b.Max.String() +
		" multiplier=" + strconv.FormatFloat(b.Multiplier, 'g', -1, 64) +
		" jitter=" + strconv.FormatFloat(b.Jitter, 'g', -1, 64)
}
