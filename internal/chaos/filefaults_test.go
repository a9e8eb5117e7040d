package chaos

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/internal/unprivileged"
	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// The fault workload: counters with a payload, so that files span pages;
// faultForward sends a durable faultAdd{1} to each of To.
type (
	faultAdd     struct{ N int }
	faultGet     struct{}
	faultForward struct{ To []string }
)

func init() { actors.MustRegisterMessage[faultAdd]("chaos.fault.add") }

var faultMigrations = []persistence.Migration{
	{Name: "counter", SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`},
	{Name: "payload", SQL: `CREATE TABLE payload (i INTEGER PRIMARY KEY, b BLOB NOT NULL)`},
}

func faultHandler(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case faultAdd:
		if _, err := c.Exec(`INSERT INTO payload (b) VALUES (randomblob(1000))`); err != nil {
			return nil, err
		}
		var n int
		err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, m.N).Scan(&n)
		return n, err
	case faultForward:
		for _, to := range m.To {
			if err := c.SendDurable(to, faultAdd{1}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case faultGet:
		var n, rows int
		if err := c.QueryRow(`SELECT n, (SELECT count(*) FROM payload) FROM counter`).Scan(&n, &rows); err != nil {
			return nil, err
		}
		if rows != n {
			return nil, fmt.Errorf("counter %d, %d payload rows", n, rows)
		}
		return n, nil
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

func faultKinds() []actors.Kind {
	h := actors.HandlerFunc(faultHandler)
	return []actors.Kind{
		{Name: "top", Pattern: "f", Migrations: faultMigrations, Handler: h},
		{Name: "leaf", Pattern: "f/*", Migrations: faultMigrations, Handler: h},
	}
}

// A fault applied to one part's file while no System has it open.
type fileFault struct {
	name  string
	apply func(t *testing.T, file string)
	// want: the errors the part's callers must get (all of them).
	want []error
}

func fileFaults(seed uint64) []fileFault {
	return []fileFault{
		{name: "truncated", apply: func(t *testing.T, file string) {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(file, fi.Size()/2+123); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrCorrupt}},
		{name: "corrupted", apply: func(t *testing.T, file string) {
			b := fileBytes(t, file)
			r := newRandFrom(seed)
			for i := 100; i < len(b); i++ { // random bytes over every page, the header's first 100 bytes kept
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrCorrupt}},
		{name: "garbage", apply: func(t *testing.T, file string) {
			b := fileBytes(t, file)
			r := newRandFrom(seed + 1)
			for i := range b { // not even a SQLite header
				b[i] = byte(r.Uint32())
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrCorrupt}},
		{name: "newer", apply: func(t *testing.T, file string) {
			db, err := sql.Open("sqlite", file)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrSchemaTooNew}},
		{name: "readonly-file", apply: func(t *testing.T, file string) {
			if err := os.Chmod(file, 0o444); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrReadOnly}},
		{name: "readonly-dir", apply: func(t *testing.T, file string) {
			if err := os.Chmod(filepath.Dir(file), 0o555); err != nil {
				t.Fatal(err)
			}
		}, want: []error{persistence.ErrReadOnly}},
		{name: "deleted", want: []error{actors.ErrFileMissing}, apply: func(t *testing.T, file string) {
			for _, s := range []string{"", "-wal", "-shm"} {
				if err := os.Remove(file + s); err != nil && !errors.Is(err, fs.ErrNotExist) {
					t.Fatal(err)
				}
			}
		}},
	}
}

// TestFileFaults damages one part's file per fault class while the
// System is closed, then checks that each damaged part, and only it, fails
// with an error that names it and the cause, counted in the metrics; that
// its siblings and its parent serve; that the runtime leaves a damaged file
// as it found it; and that the part recovers at its next message, without a
// restart of the System, once its file is repaired.
//
// Permissions mean nothing to root, so under root the test runs itself
// again as the user nobody (see runUnprivileged).
func TestFileFaults(t *testing.T) {
	if os.Geteuid() == 0 {
		runUnprivileged(t, "TestFileFaults")
		return
	}
	_, seed := newRand(t)
	dir := t.TempDir()
	ctx := context.Background()
	const writes = 20
	faults := fileFaults(seed)
	siblings := []string{"f/healthy1", "f/healthy2", "f/healthy3"}
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: faultKinds()})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, f := range faults {
		all = append(all, "f/"+f.name)
	}
	all = append(all, siblings...)
	for _, p := range all {
		for range writes {
			if _, err := sys.Request(ctx, p, faultAdd{1}); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	}
	if err := sys.Close(ctx); err != nil {
		t.Fatal(err)
	}
	good := map[string][]byte{}    // each file before its fault
	damaged := map[string][]byte{} // and after
	for _, f := range faults {
		file := actors.MustParsePath("f/" + f.name).File(dir)
		good[f.name] = fileBytes(t, file)
		f.apply(t, file)
		if b, err := os.ReadFile(file); err == nil {
			damaged[f.name] = b
		}
	}
	t.Cleanup(func() { os.Chmod(actors.MustParsePath("f/readonly-dir").Dir(dir), 0o755) })

	reg := prometheus.NewRegistry()
	quickRetries := actors.Delivery{Backoff: supervisor.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}}
	sys, err = actors.Open(ctx, dir, actors.Options{Kinds: faultKinds(), Registerer: reg, Delivery: quickRetries})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(ctx)
	for _, f := range faults {
		p := "f/" + f.name
		_, gerr := sys.Request(ctx, p, faultGet{})
		_, aerr := sys.Request(ctx, p, faultAdd{1})
		t.Logf("%-14s get: %v", f.name, gerr)
		t.Logf("%-14s add: %v", f.name, aerr)
		for _, err := range []error{gerr, aerr} {
			if !errors.Is(err, actors.ErrActivation) || !strings.Contains(err.Error(), p) {
				t.Errorf("%s: %v; want an error wrapping ErrActivation that names %s", p, err, p)
			}
			for _, w := range f.want {
				if !errors.Is(err, w) {
					t.Errorf("%s: %v; want it to wrap %v", p, err, w)
				}
			}
		}
		if b, ok := damaged[f.name]; ok && !sameFile(t, actors.MustParsePath(p).File(dir), b) {
			t.Errorf("%s: the runtime changed the damaged file", p)
		}
	}
	// Every damaged part failed to activate (the deleted one because its
	// parent knows it had a file), twice each; no handler ran on one.
	want := float64(2 * len(faults))
	activationErrors := counterValue(t, reg, "fractal_activations_total", "kind", "leaf", "outcome", "error")
	if activationErrors != want {
		t.Errorf("fractal_activations_total{kind=leaf,outcome=error} = %v, want %v", activationErrors, want)
	}
	if got := counterValue(t, reg, "fractal_messages_total", "kind", "leaf", "outcome", "activation_error"); got != want {
		t.Errorf("fractal_messages_total{kind=leaf,outcome=activation_error} = %v, want %v", got, want)
	}
	handlerErrors := counterValue(t, reg, "fractal_messages_total", "kind", "leaf", "outcome", "error")
	if handlerErrors != 0 {
		t.Errorf("fractal_messages_total{kind=leaf,outcome=error} = %v, want 0", handlerErrors)
	}
	// The siblings and the parent serve, with everything they had.
	for _, p := range siblings {
		if v, err := sys.Request(ctx, p, faultAdd{1}); err != nil || v != writes+1 {
			t.Errorf("%s beside damaged siblings: %v, %v; want %d", p, v, err, writes+1)
		}
	}
	if _, err := sys.Request(ctx, "f", faultAdd{1}); err != nil {
		t.Errorf("the parent of damaged parts: %v", err)
	}

	// A sibling sends each damaged part a durable message: the sibling's
	// write is acknowledged, each delivery fails (and is retried) while
	// its receiver's file is damaged, and none is lost.
	var damagedPaths []string
	for _, f := range faults {
		damagedPaths = append(damagedPaths, "f/"+f.name)
	}
	if _, err := sys.Request(ctx, siblings[0], faultForward{To: damagedPaths}); err != nil {
		t.Fatalf("%s sending durable messages to its damaged siblings: %v", siblings[0], err)
	}
	if !actortest.Poll(time.Minute, 20*time.Millisecond, func() bool {
		n, _ := counterIfAny(t, reg, "fractal_durable_deliveries_total", "outcome", "error")
		return n >= float64(2*len(faults))
	}) {
		t.Fatal("the durable messages to the damaged parts were not attempted twice each within a minute")
	}
	failedAttempts := counterValue(t, reg, "fractal_durable_deliveries_total", "outcome", "error")

	// Repaired, each part comes back at its next message, with its data
	// (and, perhaps already, the durable message).
	for _, f := range faults {
		file := actors.MustParsePath("f/" + f.name).File(dir)
		switch f.name {
		case "readonly-file":
			if err := os.Chmod(file, 0o644); err != nil {
				t.Fatal(err)
			}
		case "readonly-dir":
			if err := os.Chmod(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			// Replaced in one rename, as an operator restoring a file
			// under a running System must: the durable message's retries
			// keep opening it, and a file caught half written (empty,
			// say) would be taken for a new one.
			tmp := file + ".restore"
			if err := os.WriteFile(tmp, good[f.name], 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
		}
		p := "f/" + f.name
		want := writes + 1
		if v, err := sys.Request(ctx, p, faultAdd{1}); err != nil || (v != want && v != want+1) {
			t.Errorf("%s after repair: %v, %v; want %d (or %d with the durable message)", p, v, err, want, want+1)
		}
	}
	// Every durable message arrives once, none died.
	repaired := time.Now()
	if n := waitDelivered(t, sys, siblings[:1], repaired, time.Minute); n > 0 {
		t.Fatalf("%d durable messages still undelivered a minute after the repair", n)
	}
	delivered := time.Since(repaired)
	if dead, err := sys.DeadLetters(ctx, siblings[0]); err != nil || len(dead) > 0 {
		t.Errorf("dead letters: %v, %v; want none", dead, err)
	}
	for _, p := range damagedPaths {
		if v, err := sys.Request(ctx, p, faultGet{}); err != nil || v != writes+2 {
			t.Errorf("%s: %v, %v; want %d (the repair's write and the durable message, once)", p, v, err, writes+2)
		}
	}
	if err := sys.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n, _, failures := checkAll(t, dir)
	if len(failures) > 0 {
		t.Errorf("%d of %d files fail the integrity check after repair: %v", len(failures), n, failures)
	}
	t.Logf("file faults: faults=%d activation_errors=%v handler_errors=%v siblings_served=%d repaired=%d corrupt_after_repair=%d/%d files",
		len(faults), activationErrors, handlerErrors, len(siblings), len(faults), len(failures), n)
	t.Logf("file faults: durable_sent=%d failed_attempts_before_repair=%v delivered_once=%d dead=0 all_delivered_in=%v after the repair",
		len(damagedPaths), failedAttempts, len(damagedPaths), delivered.Round(time.Millisecond))
}

// counterValue returns the value of the counter name with the given label
// pairs in reg; the counter must exist.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, kv ...string) float64 {
	t.Helper()
	v, ok := counterIfAny(t, reg, name, kv...)
	if !ok {
		t.Fatalf("no metric %s%v", name, kv)
	}
	return v
}

// counterIfAny is counterValue for a counter that may not exist yet (a
// series of a vector appears at its first increment).
func counterIfAny(t *testing.T, reg *prometheus.Registry, name string, kv ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		want[kv[i]] = kv[i+1]
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// runUnprivileged runs the test named test again as the user nobody, for
// the faults that root does not notice (root ignores file permissions), and
// fails t if it fails.
func runUnprivileged(t *testing.T, test string) {
	t.Helper()
	var args []string
	if *seedFlag != 0 {
		args = append(args, fmt.Sprintf("-chaos.seed=%d", *seedFlag))
	}
	unprivileged.Run(t, test, 5*time.Minute, args...)
}
