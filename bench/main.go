// Command bench measures one workload against fractal and against the
// systems it is compared with, in one run on one machine: N parts, each a
// counter in its own store, each request a read-modify-write of one part's
// counter whose reply is released after the commit. See README.md.
//
// "bench scale" runs the scale benchmark instead (scale.go): 100,000 parts
// on disk, a cap on the parts open at once, zipfian and uniform streams.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// A system is one entry of the comparison; its name is fixed (scripts parse
// the RESULT lines).
type system struct {
	name string
	desc string
	// make returns a fresh target, or nil when the system is not
	// available in this run (postgres without -postgres).
	make func(cfg *config) target
}

// systems lists every system, in the order they run.
func systems() []system {
	return []system{
		{"floor", "goroutine per part, own SQLite file (synchronous=NORMAL), batched like fractal",
			func(*config) target { return &floor{} }},
		{"memory", "protoactor-go actor per part, counter in memory",
			func(*config) target { return &actorTarget{b: memoryBackend{}} }},
		{"fractal-durable", "fractal, durability PowerLoss (shared barrier)",
			func(*config) target { return newFractal(fractalDurable) }},
		{"fractal-durable-perpart", "fractal, durability PowerLossPerCommit (synchronous=FULL per part)",
			func(*config) target { return newFractal(fractalDurablePerPart) }},
		{"fractal-normal", "fractal, durability ProcessCrash (synchronous=NORMAL)",
			func(*config) target { return newFractal(fractalNormal) }},
		{"fractal-nobatch", "fractal, durability PowerLoss, MaxBatch 1",
			func(*config) target { return newFractal(fractalNoBatch) }},
		{"shared-sqlite", "protoactor-go actor per part, one shared SQLite file (synchronous=FULL)",
			func(*config) target { return &actorTarget{b: &sharedSQLite{}} }},
		{"postgres-durable", "protoactor-go actor per part, PostgreSQL, synchronous_commit=on",
			func(c *config) target { return c.postgres("on") }},
		{"postgres-relaxed", "protoactor-go actor per part, PostgreSQL, synchronous_commit=off",
			func(c *config) target { return c.postgres("off") }},
	}
}

type config struct {
	parts        int
	clients      int
	ramp         time.Duration
	duration     time.Duration
	openDuration time.Duration
	openRate     float64
	warmWorkers  int
	seed         int64
	dir          string
	pgDSN        string
	pgPool       int
	timeout      time.Duration
}

func (c *config) postgres(syncCommit string) target {
	if c.pgDSN == "" {
		return nil
	}
	return &actorTarget{b: &postgres{dsn: c.pgDSN, poolSize: c.pgPool, synchronousCommit: syncCommit}}
}

// outcome is one system's measurements.
type outcome struct {
	name   string
	ran    bool
	err    error
	closed closedResult
	open   openResult
	warm   time.Duration
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "scale" {
		return runScale(args[1:], stdout, stderr) // the scale benchmark: scale.go
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg      config
		names    = fs.String("systems", "", "comma-separated systems to run (default: all available)")
		quick    = fs.Bool("quick", false, "quick mode: closed loop 0.5s ramp + 1s, open loop 0.5s, 1000 parts, 10000 clients, no postgres")
		openRate = fs.String("open-rate", "", "open-loop requests per second (default: half of each system's closed-loop rate)")
		seed     = fs.Int64("seed", 0, "random seed (default: from the clock)")
	)
	fs.IntVar(&cfg.parts, "parts", 1000, "number of parts")
	fs.IntVar(&cfg.clients, "clients", 10000, "concurrent clients in the closed loop")
	fs.DurationVar(&cfg.ramp, "ramp", time.Second, "closed-loop time before the window, not measured")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "closed-loop measurement time per system")
	fs.DurationVar(&cfg.openDuration, "open-duration", 0, "open-loop measurement time per system (default: -duration)")
	fs.IntVar(&cfg.warmWorkers, "warm-workers", 256, "requests in flight during the warm-up")
	fs.StringVar(&cfg.dir, "dir", "", "data root (default: a temporary directory, removed at the end)")
	fs.StringVar(&cfg.pgDSN, "postgres", "", "PostgreSQL DSN; enables postgres-durable and postgres-relaxed")
	fs.IntVar(&cfg.pgPool, "pg-pool", 16, "pgxpool size for the postgres systems (16 was the fastest of 8, 16 and 32 for postgres-durable on a 2-core machine)")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up on a system after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		// The quick mode fits every non-postgres system in under a
		// minute on a 2-core machine, warm-ups, drains and checks
		// included: 2s of load per system, 1.5s of it measured.
		if !set["ramp"] {
			cfg.ramp = 500 * time.Millisecond
		}
		if !set["duration"] {
			cfg.duration = time.Second
		}
		if !set["open-duration"] {
			cfg.openDuration = 500 * time.Millisecond
		}
		if !set["parts"] {
			cfg.parts = 1000
		}
		if !set["clients"] {
			cfg.clients = 10000
		}
		cfg.pgDSN = ""
	}
	if cfg.openDuration == 0 {
		cfg.openDuration = cfg.duration
	}
	if cfg.parts < 1 || cfg.parts > 9999 {
		return fmt.Errorf("-parts must be in [1, 9999], got %d", cfg.parts)
	}
	if cfg.clients < 1 {
		return fmt.Errorf("-clients must be positive, got %d", cfg.clients)
	}
	if cfg.duration <= 0 || cfg.openDuration <= 0 || cfg.ramp < 0 {
		return errors.New("-duration and -open-duration must be positive, -ramp not negative")
	}
	if cfg.pgPool < 1 {
		return fmt.Errorf("-pg-pool must be positive, got %d", cfg.pgPool)
	}
	if *openRate != "" {
		r, err := strconv.ParseFloat(*openRate, 64)
		if err != nil || r <= 0 || math.IsInf(r, 0) {
			return fmt.Errorf("-open-rate must be a positive number, got %q", *openRate)
		}
		cfg.openRate = r
	}
	cfg.seed = *seed
	if !set["seed"] {
		cfg.seed = time.Now().UnixNano()
	}

	all := systems()
	var chosen []system
	if *names == "" {
		chosen = all
	} else {
		byName := map[string]system{}
		for _, s := range all {
			byName[s.name] = s
		}
		for _, n := range strings.Split(*names, ",") {
			s, ok := byName[strings.TrimSpace(n)]
			if !ok {
				return fmt.Errorf("unknown system %q (known: %s)", n, systemNames(all))
			}
			if s.make(&cfg) == nil {
				return fmt.Errorf("system %s needs -postgres (and is off in -quick mode)", s.name)
			}
			chosen = append(chosen, s)
		}
	}

	// Deferred first, so that it runs last: the total includes removing
	// the data root.
	began := time.Now()
	defer func() { fmt.Fprintf(stderr, "total %s\n", secs(time.Since(began))) }()

	if cfg.dir == "" {
		d, err := os.MkdirTemp("", "fractal-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cfg.dir = d
	} else {
		if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
			return err
		}
	}

	printMachine(stdout, &cfg)

	// An interrupt ends the run cleanly: the current system's requests
	// fail, the next systems are skipped, and the data root is removed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var outs []outcome
	for _, s := range chosen {
		t := s.make(&cfg)
		if t == nil || ctx.Err() != nil {
			why := "needs -postgres"
			if ctx.Err() != nil {
				why = "interrupted"
			}
			fmt.Fprintf(stderr, "%-23s skipped (%s)\n", s.name, why)
			outs = append(outs, outcome{name: s.name})
			continue
		}
		o := measure(ctx, &cfg, s.name, t, stderr)
		if o.err != nil {
			fmt.Fprintf(stderr, "%-23s FAILED: %v\n", s.name, o.err)
		}
		outs = append(outs, o)
	}

	printTable(stdout, outs)
	var failed []string
	for _, o := range outs {
		if o.err != nil {
			failed = append(failed, o.name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("FAILED: %s (see above)", strings.Join(failed, ", "))
	}
	return nil
}

func systemNames(all []system) string {
	names := make([]string, len(all))
	for i, s := range all {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}

// measure runs the whole sequence on one system: open, warm-up, closed
// loop, open loop, then the correctness check.
func measure(parent context.Context, cfg *config, name string, t target, log io.Writer) (o outcome) {
	o = outcome{name: name, ran: true}
	ctx, cancel := context.WithTimeout(parent, cfg.timeout)
	defer cancel()
	dir := filepath.Join(cfg.dir, name)
	if err := os.RemoveAll(dir); err != nil {
		o.err = err
		return o
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		o.err = err
		return o
	}
	// The directory stays until the run ends: deleting thousands of files
	// makes the file system slower at creating the next system's files
	// (ext4 skips recently freed inodes), which would slow its warm-up.
	opened := false
	defer func() {
		if opened && o.err != nil {
			// Release what can be released; the result is already an error.
			_, _ = t.finish(ctx)
		}
	}()
	if err := t.open(ctx, dir, cfg.parts); err != nil {
		o.err = fmt.Errorf("open: %w", err)
		return o
	}
	opened = true

	fmt.Fprintf(log, "%-23s warm-up...", name)
	w0 := time.Now()
	warmAcked, err := warmUp(ctx, t, cfg.parts, cfg.warmWorkers)
	o.warm = time.Since(w0)
	if err != nil {
		fmt.Fprintln(log)
		o.err = fmt.Errorf("warm-up: %w", err)
		return o
	}
	fmt.Fprintf(log, " %v | closed...", secs(o.warm))
	runtime.GC()

	c0 := time.Now()
	o.closed, err = closedLoop(ctx, t, cfg.parts, cfg.clients, cfg.ramp, cfg.duration, cfg.seed)
	closedTime := time.Since(c0)
	if err != nil {
		fmt.Fprintln(log)
		o.err = fmt.Errorf("closed loop: %w", err)
		return o
	}
	rate := cfg.openRate
	if rate == 0 {
		rate = o.closed.rate() / 2
	}
	fmt.Fprintf(log, " %v: %.0f msgs/s, in flight %.0f, replies per client min %d median %d max %d | open at %.0f/s...",
		secs(closedTime), o.closed.rate(), o.closed.inflight, o.closed.servedMin, o.closed.servedMedian, o.closed.servedMax, rate)
	runtime.GC()
	o0 := time.Now()
	if rate > 0 {
		o.open, err = openLoop(ctx, t, cfg.parts, rate, cfg.openDuration, cfg.seed)
		if err != nil {
			fmt.Fprintln(log)
			o.err = fmt.Errorf("open loop: %w", err)
			return o
		}
	}
	fmt.Fprintf(log, " %v: p99 %v | check...", secs(time.Since(o0)), fmtDur(o.open.lat.quantileOr0(0.99)))

	acked := warmAcked + o.closed.acked + o.open.acked
	opened = false
	f0 := time.Now()
	sum, err := t.finish(ctx)
	if err != nil {
		fmt.Fprintln(log)
		o.err = fmt.Errorf("finish: %w", err)
		return o
	}
	if sum != acked {
		fmt.Fprintln(log)
		o.err = fmt.Errorf("CORRECTNESS: the counters sum to %d, but %d requests were acknowledged (warm-up %d, closed %d, open %d)",
			sum, acked, warmAcked, o.closed.acked, o.open.acked)
		return o
	}
	fmt.Fprintf(log, " %v: ok, %d acknowledged = sum of counters\n", secs(time.Since(f0)), acked)
	return o
}

// secs prints a phase's duration.
func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func (l *latencies) quantileOr0(q float64) time.Duration {
	if l == nil {
		return 0
	}
	return l.quantile(q)
}

func printMachine(w io.Writer, cfg *config) {
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	fmt.Fprintf(w, "machine: nproc=%d GOMAXPROCS=%d go=%s kernel=%s %s/%s cpu=%q\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), kernel, runtime.GOOS, runtime.GOARCH, cpuModel())
	open := "half of closed-loop rate"
	if cfg.openRate > 0 {
		open = fmt.Sprintf("%.0f/s", cfg.openRate)
	}
	pg := "off"
	if cfg.pgDSN != "" {
		pg = fmt.Sprintf("on (pool %d)", cfg.pgPool)
	}
	fmt.Fprintf(w, "workload: parts=%d clients=%d ramp=%v closed=%v open=%v open-rate=%s seed=%d postgres=%s\n\n",
		cfg.parts, cfg.clients, cfg.ramp, cfg.duration, cfg.openDuration, open, cfg.seed, pg)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func printTable(w io.Writer, outs []outcome) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tmsgs/s\tp50\tp99\topen/s\topen p50\topen p99\tcommits\tmean batch\tsyncs\t")
	byName := map[string]outcome{}
	for _, o := range outs {
		byName[o.name] = o
		switch {
		case !o.ran:
			fmt.Fprintf(tw, "%s\tnot run\t\t\t\t\t\t\t\t\t\n", o.name)
			continue
		case o.err != nil:
			fmt.Fprintf(tw, "%s\tFAILED\t\t\t\t\t\t\t\t\t\n", o.name)
			continue
		}
		commits, batch, syncs := "-", "-", "-"
		if st := o.closed.stats; o.closed.hasStats {
			commits = strconv.FormatUint(st.commits, 10)
			if st.commits > 0 {
				batch = fmt.Sprintf("%.1f", float64(st.messages)/float64(st.commits))
			}
			if st.hasSyncs {
				syncs = strconv.FormatUint(st.syncs, 10)
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", o.name,
			o.closed.rate(), fmtDur(o.closed.lat.quantile(0.5)), fmtDur(o.closed.lat.quantile(0.99)),
			o.open.rate, fmtDur(o.open.lat.quantileOr0(0.5)), fmtDur(o.open.lat.quantileOr0(0.99)),
			commits, batch, syncs)
	}
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, "same-run ratios of closed-loop msgs/s:")
	for _, r := range []struct{ label, a, b string }{
		{"c/h", "fractal-durable", "postgres-durable"},
		{"c/g", "fractal-durable", "shared-sqlite"},
		{"c/f", "fractal-durable", "fractal-nobatch"},
		{"c/e", "fractal-durable", "fractal-normal"},
		{"e/a", "fractal-normal", "floor"},
	} {
		v := "n/a"
		a, aok := byName[r.a]
		b, bok := byName[r.b]
		if aok && bok && a.ran && b.ran && a.err == nil && b.err == nil && b.closed.rate() > 0 {
			v = fmt.Sprintf("%.2f", a.closed.rate()/b.closed.rate())
		}
		fmt.Fprintf(w, "  %s = %-6s (%s / %s)\n", r.label, v, r.a, r.b)
	}

	fmt.Fprintln(w)
	for _, o := range outs {
		if !o.ran || o.err != nil {
			continue
		}
		fmt.Fprintf(w, "RESULT system=%s msgs_per_s=%d p50_us=%d p99_us=%d\n", o.name,
			int64(math.Round(o.closed.rate())), o.closed.lat.quantile(0.5).Microseconds(), o.closed.lat.quantile(0.99).Microseconds())
	}
}

// fmtDur prints a latency with three significant digits in µs or ms.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
