package actors

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultScatterConcurrency is the number of requests System.Scatter keeps
// in flight at once when ScatterOptions.Concurrency is zero.
const DefaultScatterConcurrency = 32

// ErrIncomplete is wrapped by the error of a ScatterResult that reports a
// part of the tree Scatter could not search, rather than a part it asked:
// the children of the part at the result's Path could not be listed (its
// file is damaged, for example), or the context ended before the walk
// under that path was done. Matching parts below that path may not have
// been asked.
var ErrIncomplete = errors.New("actors: scatter: part of the tree was not searched")

// ScatterOptions configure System.Scatter. The zero value (and a nil
// pointer) selects the defaults.
type ScatterOptions struct {
	// Concurrency bounds the number of requests in flight at once, and so
	// the number of matching parts this call activates at once (Request
	// also activates a part's ancestors on its way, as it always does).
	// Zero means DefaultScatterConcurrency; it must not be negative.
	Concurrency int

	// PerPart, when positive, bounds the wait for each part's reply on
	// top of the context's deadline: a part that has not answered within
	// PerPart yields an error wrapping context.DeadlineExceeded. Zero
	// means only the context bounds it; it must not be negative.
	PerPart time.Duration
}

// ScatterResult is what System.Scatter yields for one part: the part's
// reply, or the error that stands for it.
type ScatterResult struct {
	// Path is the part that was asked. For an error wrapping ErrIncomplete
	// it is the part under which the search could not go on (the root,
	// the zero Path, when the pattern starts with "*"); for an invalid
	// pattern it is the zero Path.
	Path Path

	// Reply is the part's reply, when Err is nil.
	Reply any

	// Err is the part's error, as System.Request returns it (the
	// handler's error, or an error wrapping ErrActivation, ErrPanic,
	// ErrNoKind, ErrClosed, ...), or an error wrapping
	// context.DeadlineExceeded for a part that did not answer in time.
	Err error
}

// Scatter sends msg to every part whose path matches pattern and yields
// one ScatterResult per part as its reply arrives: a scatter-gather, or
// "search everywhere". The same msg value goes to every part, so handlers
// must not modify what it refers to.
//
// pattern is a path whose segments are literal names or "*", which matches
// any one segment: "mail/*/*" is every part two levels below "mail",
// "mail/example.org/*" every child of "mail/example.org". ("*" is also a
// valid segment name; in a pattern it always means any segment.) A pattern
// that is not a well-formed path yields a single result whose error wraps
// ErrInvalidPath, and one that no declared kind of its depth can match a
// single result whose error wraps ErrNoKind; options that are out of
// range yield a single error too.
//
// Parts are found with System.Children, from the pattern's longest literal
// prefix down, level by level: only parts that have been activated at
// least once are found, the parents' files are read through read-only
// connections of their own, and no directory is scanned. The walk is depth
// first and streams: the first matching part is asked as soon as it is
// found, while the rest of the tree is still being listed. Each matching
// part is asked with System.Request, which activates it (and its
// ancestors) if it is not active; no part that does not match, other than
// those ancestors, is activated.
//
// Every part found yields exactly one result: its reply, or its error;
// except a part deleted between its listing and its request, which yields
// none (see System.Delete). A
// part that has not answered when ctx ends yields an error wrapping
// ctx.Err() (context.DeadlineExceeded at a deadline), and the sequence
// ends promptly then, without waiting for the slow parts: the caller gets
// the replies that arrived plus one error per part that failed or was
// late. If the walk itself was cut short by ctx, or could not list the
// children of some part, a result with an error wrapping ErrIncomplete says
// where.
//
// Results come in the order they arrive. Stopping the iteration early
// (break) cancels the requests still in flight, through the context they
// carry, and waits until each of them has returned and the walk has
// stopped: nothing of the search outlives the loop.
//
// Bounds: at most opts.Concurrency requests are in flight at once (see
// ScatterOptions). The walk holds at most one found path waiting for a
// free request slot, plus the listing of the children of one part per
// level of the pattern it is walking (System.Children returns one level
// whole); at most Concurrency results wait for the caller to take them.
// Nothing else grows with the number of parts.
//
// The search starts when the sequence is iterated, and starts again at
// every iteration.
func (s *System) Scatter(ctx context.Context, pattern string, msg any, opts *ScatterOptions) iter.Seq[ScatterResult] {
	return func(yield func(ScatterResult) bool) {
		sc, start, err := s.newScatter(pattern, msg, opts)
		if err != nil {
			yield(ScatterResult{Err: err})
			return
		}
		sc.run(ctx, start, yield)
	}
}

// scatter is one iteration of a Scatter's sequence.
type scatter struct {
	sys     *System
	segs    []string // the pattern's segments
	msg     any
	perPart time.Duration

	ctx     context.Context // the caller's, also cancelled when the iteration stops
	stop    chan struct{}   // closed when the iteration stops: results are no longer wanted
	slots   chan struct{}   // one token per request in flight
	results chan ScatterResult
	askers  sync.WaitGroup
	asked   atomic.Int64 // parts asked, for fractal_scatter_parts
}

// newScatter validates a Scatter call and returns the search and the path
// its walk starts from.
func (s *System) newScatter(pattern string, msg any, opts *ScatterOptions) (*scatter, Path, error) {
	var o ScatterOptions
	if opts != nil {
		o = *opts
	}
	switch {
	case o.Concurrency < 0:
		return nil, Path{}, fmt.Errorf("actors: scatter: negative Concurrency %d", o.Concurrency)
	case o.PerPart < 0:
		return nil, Path{}, fmt.Errorf("actors: scatter: negative PerPart %v", o.PerPart)
	case o.Concurrency == 0:
		o.Concurrency = DefaultScatterConcurrency
	}
	// "*" is a valid segment, so a well-formed pattern is a valid path.
	p, err := ParsePath(pattern)
	if err != nil {
		return nil, Path{}, err
	}
	segs := p.Segments()
	if !s.kindCanMatch(segs) {
		return nil, Path{}, fmt.Errorf("%w: no kind of depth %d matches pattern %q", ErrNoKind, len(segs), pattern)
	}
	// The literal prefix is walked down without listing, except for the
	// last segment: a part is found only if its parent lists it.
	lit := 0
	for lit < len(segs)-1 && segs[lit] != "*" {
		lit++
	}
	sc := &scatter{
		sys:     s,
		segs:    segs,
		msg:     msg,
		perPart: o.PerPart,
		stop:    make(chan struct{}),
		slots:   make(chan struct{}, o.Concurrency),
		results: make(chan ScatterResult, o.Concurrency),
	}
	return sc, p.Ancestor(lit), nil
}

// kindCanMatch reports whether some declared kind matches some path that
// the pattern segs matches.
func (s *System) kindCanMatch(segs []string) bool {
	for _, k := range s.opts.Kinds {
		ks := strings.Split(k.Pattern, "/")
		if len(ks) != len(segs) {
			continue
		}
		overlap := true
		for i := range ks {
			if ks[i] != "*" && segs[i] != "*" && ks[i] != segs[i] {
				overlap = false
				break
			}
		}
		if overlap {
			return true
		}
	}
	return false
}

// run walks the tree from start on a goroutine of its own, which asks each
// matching part on a goroutine per request, and yields the results on the
// caller's goroutine until they are all in or yield asks to stop.
func (sc *scatter) run(ctx context.Context, start Path, yield func(ScatterResult) bool) {
	ctx, cancel := context.WithCancel(ctx)
	sc.ctx = ctx
	go func() {
		defer close(sc.results)
		if !sc.walk(start, start.Depth()) && ctx.Err() != nil {
			sc.emit(ScatterResult{Path: start, Err: fmt.Errorf("%w: the walk under %q was cut short: %w",
				ErrIncomplete, start.String(), ctx.Err())})
		}
		sc.askers.Wait()
		if m := sc.sys.metrics; m != nil {
			m.scatterFanout.Observe(float64(sc.asked.Load()))
		}
	}()
	// However the iteration ends (completion, break, a panic in the
	// loop's body), the requests still in flight are cancelled and
	// every goroutine of the search has ended before run returns.
	defer func() {
		close(sc.stop)
		cancel()
		for range sc.results {
		}
	}()
	for r := range sc.results {
		if !yield(r) {
			return
		}
	}
}

// walk finds the parts below p, a path of depth d that matches the
// pattern's first d segments, and asks each of them. It returns false
// when the search must end: the iteration stopped, or ctx ended before
// a listing.
func (sc *scatter) walk(p Path, d int) bool {
	if d == len(sc.segs) {
		return sc.ask(p)
	}
	seg := sc.segs[d]
	if seg != "*" && d < len(sc.segs)-1 {
		c, err := p.Child(seg) // cannot fail: the pattern is a valid path
		if err != nil {
			return sc.emit(ScatterResult{Path: p, Err: fmt.Errorf("%w: %w", ErrIncomplete, err)})
		}
		return sc.walk(c, d+1)
	}
	if sc.ctx.Err() != nil {
		return false
	}
	names, err := sc.sys.Children(sc.ctx, p.String())
	if err != nil {
		if sc.ctx.Err() != nil {
			return false
		}
		return sc.emit(ScatterResult{Path: p, Err: fmt.Errorf("%w: %w", ErrIncomplete, err)})
	}
	if seg != "*" {
		if _, ok := slices.BinarySearch(names, seg); !ok {
			return true
		}
		names = []string{seg}
	}
	for _, name := range names {
		c, err := p.Child(name)
		if err != nil {
			// A recorded name that is not a segment: the parent's
			// file is damaged, and the rest of its listing is
			// still worth asking.
			if !sc.emit(ScatterResult{Path: p, Err: fmt.Errorf("%w: %w", ErrIncomplete, err)}) {
				return false
			}
			continue
		}
		if !sc.walk(c, d+1) {
			return false
		}
	}
	return true
}

// ask sends the message to the part at p on a goroutine of its own, once
// fewer than Concurrency requests are in flight. A part found after ctx
// ended is not asked, and yields ctx's error.
func (sc *scatter) ask(p Path) bool {
	select {
	case sc.slots <- struct{}{}:
	case <-sc.ctx.Done():
		if m := sc.sys.metrics; m != nil {
			m.scatterErrors.Inc()
		}
		return sc.emit(ScatterResult{Path: p, Err: fmt.Errorf("actors: scatter: %s not asked: %w", p, sc.ctx.Err())})
	}
	sc.asked.Add(1)
	sc.askers.Go(func() {
		defer func() { <-sc.slots }()
		ctx := sc.ctx
		if sc.perPart > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, sc.perPart)
			defer cancel()
		}
		reply, err := sc.sys.Request(ctx, p.String(), sc.msg)
		if errors.Is(err, ErrNoPart) {
			return // deleted since it was listed: not a part any more
		}
		if err != nil && sc.sys.metrics != nil {
			sc.sys.metrics.scatterErrors.Inc()
		}
		sc.emit(ScatterResult{Path: p, Reply: reply, Err: err})
	})
	return true
}

// emit hands r to the caller; it returns false once the caller stopped.
func (sc *scatter) emit(r ScatterResult) bool {
	select {
	case <-sc.stop:
		return false
	default:
	}
	select {
	case sc.results <- r:
		return true
	case <-sc.stop:
		return false
	}
}
