package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

var (
	fdParts   = flag.Int("chaos.fdparts", 500, "TestDescriptorLimit: parts written and read back (make chaos: 10000)")
	fdLimit   = flag.Int("chaos.fdlimit", 256, "TestDescriptorLimit: the descriptor limit (RLIMIT_NOFILE) of the child process")
	fdClients = flag.Int("chaos.fdclients", 32, "TestDescriptorLimit: concurrent clients")
	fdIdle    = flag.Duration("chaos.fdidle", 0, "TestDescriptorLimit: Kind.IdleTimeout of the parts (0: the default)")
	mailbox   = flag.Int("chaos.mailbox", 2000, "TestFloodOneSlowPart: Options.MaxMailbox (0: the default, actors.DefaultMaxMailbox; make chaos)")
)

const fdEnv = "FRACTAL_CHAOS_NOFILE"

// TestDescriptorLimit runs thousands of parts in a process whose
// descriptor limit is far below what they would need if all stayed open:
// an open part holds three descriptors (its file, its log, the log's
// index). The cap on active parts, derived from the limit, must passivate
// enough of them for every request to succeed, and every write to be read
// back. The limit is process-wide, so the test runs itself again in a child
// process with the limit lowered.
//
// The default test run uses -chaos.fdparts' default, 500 parts; make
// chaos runs 10,000.
func TestDescriptorLimit(t *testing.T) {
	if os.Getenv(fdEnv) == "" {
		runChildTest(t, "TestDescriptorLimit", fdEnv+"="+strconv.Itoa(*fdLimit),
			fmt.Sprintf("-chaos.fdparts=%d", *fdParts), fmt.Sprintf("-chaos.fdclients=%d", *fdClients), fmt.Sprintf("-chaos.fdidle=%v", *fdIdle))
		return
	}
	limit, _ := strconv.ParseUint(os.Getenv(fdEnv), 10, 64)
	lim := syscall.Rlimit{Cur: limit, Max: limit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	dir := t.TempDir()
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	h := actors.HandlerFunc(faultHandler)
	kinds := []actors.Kind{
		{Name: "top", Pattern: "n", Migrations: faultMigrations, Handler: h},
		{Name: "group", Pattern: "n/*", Migrations: faultMigrations, Handler: h, IdleTimeout: *fdIdle},
		{Name: "leaf", Pattern: "n/*/*", Migrations: faultMigrations, Handler: h, IdleTimeout: *fdIdle},
	}
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: kinds, Registerer: reg}) // MaxActiveParts from the limit
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(ctx)
	n := *fdParts
	path := func(i int) string { return fmt.Sprintf("n/g%02d/p%04d", i%100, i) }
	var maxOpen atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() { // the process's open descriptors, sampled
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if ents, err := os.ReadDir("/proc/self/fd"); err == nil && int64(len(ents)) > maxOpen.Load() {
				maxOpen.Store(int64(len(ents)))
			}
		}
	}()
	pass := func(name string, msg any, want int) (failed int, first error) {
		start := time.Now()
		var next atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range *fdClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
					v, err := sys.Request(ctx, path(i), msg)
					if err == nil && v != want {
						err = fmt.Errorf("got %v, want %d", v, want)
					}
					if err != nil {
						mu.Lock()
						failed++
						if first == nil {
							first = fmt.Errorf("%s: %w", path(i), err)
						}
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("%s: %d parts in %v, %d failed", name, n, time.Since(start).Round(time.Millisecond), failed)
		return failed, first
	}
	wf, werr := pass("write", faultAdd{1}, 1)
	rf, rerr := pass("read back", faultGet{}, 1)
	close(stop)
	sampler.Wait()
	st := sys.Stats()
	t.Logf("descriptors: limit=%d max_open_sampled=%d; passivations=%d; activations ok=%v error=%v",
		limit, maxOpen.Load(), st.Passivations,
		counterValue(t, reg, "fractal_activations_total", "kind", "leaf", "outcome", "ok"),
		counterValue(t, reg, "fractal_activations_total", "kind", "leaf", "outcome", "error"))
	if wf+rf > 0 {
		t.Fatalf("%d writes and %d reads failed under a limit of %d descriptors; first: %v / %v", wf, rf, limit, werr, rerr)
	}
	if st.Passivations < uint64(n) {
		t.Errorf("%d passivations for %d parts: the cap did not hold", st.Passivations, n)
	}
}

// runChildTest runs the test named test in a child process (this test
// binary again) with env added, and fails t if it fails.
func runChildTest(t *testing.T, test string, env string, args ...string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"-test.run=^" + test + "$", "-test.count=1", "-test.v"}, args...)...)
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	t.Logf("child process (%s):\n%s", env, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("child run of %s failed: %v", test, err)
	}
}

// TestFloodOneSlowPart floods one part that cannot keep up (its handler
// is blocked) with sends and requests: its mailbox holds at most
// Options.MaxMailbox messages (-chaos.mailbox; make chaos runs it with the
// default, actors.DefaultMaxMailbox), every
// message beyond gets ErrBackpressure at once, the heap grows by the
// bounded queue only, and every accepted message is applied once the part
// catches up. (actors.TestMailboxBoundGivesBackpressure checks the bound
// itself with a small MaxMailbox.)
func TestFloodOneSlowPart(t *testing.T) {
	ctx := context.Background()
	block := make(chan struct{})
	var blocked atomic.Bool
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		if _, ok := msg.(faultAdd); ok && blocked.Load() && c.Path().String() == "s/slow" {
			<-block
		}
		var n int
		err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, msg.(faultAdd).N).Scan(&n)
		return n, err
	})
	kinds := []actors.Kind{
		{Name: "top", Pattern: "s", Migrations: faultMigrations, Handler: h},
		{Name: "leaf", Pattern: "s/*", Migrations: faultMigrations, Handler: h},
	}
	bound := *mailbox
	if bound == 0 {
		bound = actors.DefaultMaxMailbox
	}
	sys, err := actors.Open(ctx, t.TempDir(), actors.Options{Kinds: kinds, MaxMailbox: *mailbox})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(ctx)
	if _, err := sys.Request(ctx, "s/slow", faultAdd{0}); err != nil {
		t.Fatal(err)
	}
	blocked.Store(true)

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	sends := 3 * bound
	accepted, refused := 0, 0
	for range sends {
		err := sys.Send("s/slow", faultAdd{1})
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, actors.ErrBackpressure):
			refused++
		default:
			t.Fatalf("send: %v", err)
		}
	}
	// Requests from many callers: refused at once, not queued.
	const callers = 500
	var wg sync.WaitGroup
	var reqRefused atomic.Int64
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := sys.Request(rctx, "s/slow", faultAdd{1}); errors.Is(err, actors.ErrBackpressure) {
				reqRefused.Add(1)
			} else {
				t.Errorf("a request to a full mailbox: %v, want ErrBackpressure", err)
			}
		}()
	}
	wg.Wait()
	queued := sys.MailboxLen("s/slow")
	grown := int64(heap()) - int64(before)
	// A sibling is not affected.
	if _, err := sys.Request(ctx, "s/other", faultAdd{1}); err != nil {
		t.Fatalf("a sibling of the flooded part: %v", err)
	}
	blocked.Store(false)
	close(block)
	if accepted != bound {
		t.Errorf("%d sends accepted, want the bound, %d", accepted, bound)
	}
	// The accepted messages are all applied (Send is at most once, but
	// nothing here fails).
	actortest.CheckFor(t, 2*time.Minute, 50*time.Millisecond, func() error {
		v, err := sys.Request(ctx, "s/slow", faultAdd{0})
		if err != nil && !errors.Is(err, actors.ErrBackpressure) {
			t.Fatal(err)
		}
		if err != nil || v != accepted {
			return fmt.Errorf("slow part at %v (%v), want %d", v, err, accepted)
		}
		return nil
	})
	t.Logf("flood: sends=%d accepted=%d refused=%d; requests=%d refused=%d; mailbox=%d (bound %d); heap grew %d KiB while full (%d B per queued message); all %d applied",
		sends, accepted, refused, callers, reqRefused.Load(), queued, bound, grown>>10, grown/int64(max(queued, 1)), accepted)
}
