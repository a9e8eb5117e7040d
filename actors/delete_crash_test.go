//go:build unix

package actors_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

var deleteCycles = flag.Int("delete.cycles", 16, "TestDeleteKill9: kill -9 cycles")

// deleteCrashEnv, when set, makes the test binary the child process of
// TestDeleteKill9 (see deleteCrashChild) instead of running the tests.
const deleteCrashEnv = "FRACTAL_DELETE_CRASH"

func TestMain(m *testing.M) {
	if spec := os.Getenv(deleteCrashEnv); spec != "" {
		os.Exit(deleteCrashChild(spec))
	}
	os.Exit(m.Run())
}

// deleteSteps are the steps of a deletion (see System.delete), and "end",
// after Delete returned.
var deleteSteps = []string{"marked", "hardened", "quiesced", "tombstoned", "renamed", "removed", "done", "end"}

// The part deleted, its children, and what their counters hold.
const deleteCrashLeaves = 6

func deleteCrashOpts(durability actors.Durability) actors.Options {
	return actors.Options{Kinds: deleteKinds(&downParts{}, &atomic.Int64{}), Durability: durability}
}

// deleteCrashChild opens the System on the data directory, activates part
// of the subtree of c/a, and deletes c/a; it kills itself with SIGKILL at
// the step named in spec, after a delay.
func deleteCrashChild(spec string) int {
	f := strings.Split(spec, "|") // dir|step|delay µs|durability
	if len(f) != 4 {
		fmt.Fprintf(os.Stderr, "bad spec %q\n", spec)
		return 2
	}
	dir, step := f[0], f[1]
	delay, _ := strconv.Atoi(f[2])
	durability, _ := strconv.Atoi(f[3])
	kill := func() {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never goes on
	}
	ctx := context.Background()
	sys, err := actors.Open(ctx, dir, deleteCrashOpts(actors.Durability(durability)))
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	actors.SetDeleteHook(sys, func(s string) {
		if s != step {
			return
		}
		if delay == 0 {
			kill()
		}
		time.AfterFunc(time.Duration(delay)*time.Microsecond, kill)
	})
	for _, p := range []string{"c/a", "c/a/x0", "c/a/x1", "c/a/x2"} { // the other leaves stay passive
		if _, err := sys.Request(ctx, p, get{}); err != nil {
			fmt.Println("request:", err)
			return 1
		}
	}
	err = sys.Delete(ctx, "c/a")
	fmt.Println("deleted:", err)
	if step == "end" {
		kill()
	}
	return 0
}

// A kill -9 at any step of a deletion (and at random moments within the
// steps) leaves the part either whole, its record, files and data intact,
// or gone: no record, ErrNoPart, and no file left once its parent has
// activated. Every file passes its check either way.
func TestDeleteKill9(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	outcomes := map[bool]int{}
	for cycle := range *deleteCycles {
		step := deleteSteps[cycle%len(deleteSteps)]
		delay := 0
		if cycle >= len(deleteSteps) {
			delay = r.IntN(3000) // within 3 ms of the step
		}
		durability := actors.Durability(r.IntN(3))
		whole := deleteCrashCycle(t, step, delay, durability)
		outcomes[whole]++
		t.Logf("cycle %d: killed at %s+%dµs (%s): whole %v", cycle, step, delay, durability, whole)
		if t.Failed() {
			return
		}
	}
	if *deleteCycles >= len(deleteSteps) && (outcomes[true] == 0 || outcomes[false] == 0) {
		t.Fatalf("outcomes %v: both whole and gone should occur", outcomes)
	}
}

// deleteCrashCycle builds the tree in a new directory, runs the child
// until it is killed, and checks what it left. It reports whether c/a was
// whole.
func deleteCrashCycle(t *testing.T, step string, delay int, durability actors.Durability) bool {
	t.Helper()
	dir := t.TempDir()
	opts := deleteCrashOpts(durability)
	h := actortest.Open(t, dir, opts)
	h.MustRequest("c/a", add{10})
	for i := range deleteCrashLeaves {
		h.MustRequest(fmt.Sprintf("c/a/x%d", i), add{i + 1})
	}
	h.MustRequest("c/b", add{1})
	h.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%d|%d", deleteCrashEnv, dir, step, delay, int(durability)))
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child at step %s: %v, want killed:\n%s", step, err, out)
	}

	h = actortest.Open(t, dir, opts)
	defer h.Close()
	whole := slices.Contains(children(t, h, "c"), "a")
	if step == "end" && (whole || !strings.Contains(string(out), "deleted: <nil>")) {
		t.Errorf("killed after Delete returned: whole %v; child said:\n%s", whole, out)
	}
	if whole {
		if got := counter(t, h, "c/a"); got != 10 {
			t.Errorf("whole c/a = %d, want 10", got)
		}
		var want []string
		for i := range deleteCrashLeaves {
			p := fmt.Sprintf("c/a/x%d", i)
			if got := counter(t, h, p); got != i+1 {
				t.Errorf("whole %s = %d, want %d", p, got, i+1)
			}
			want = append(want, fmt.Sprintf("x%d", i))
		}
		if got := children(t, h, "c/a"); !slices.Equal(got, want) {
			t.Errorf("children of whole c/a: %v", got)
		}
	} else {
		for _, p := range []string{"c/a", "c/a/x0", "c/a/x5"} {
			if _, err := h.Request(p, get{}); !errors.Is(err, actors.ErrNoPart) {
				t.Errorf("request to %s of the deleted c/a: %v, want ErrNoPart", p, err)
			}
		}
		// c is active now: it finished the removal when it opened.
		if exists(actors.MustParsePath("c/a").Dir(dir)) {
			t.Error("c/a's directory is still there")
		}
		for _, name := range dirEntries(t, h, "c") {
			if strings.HasPrefix(name, "_deleted") {
				t.Errorf("left in c's directory: %s", name)
			}
		}
	}
	if got := counter(t, h, "c/b"); got != 1 {
		t.Errorf("sibling c/b = %d, want 1", got)
	}
	h.Close()
	actortest.CheckDir(t, dir)
	return whole
}
