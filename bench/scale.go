package main

// The scale benchmark (`go run . scale`, `make bench-scale`): many parts on
// disk, a cap on the parts open at once, and request streams that make the
// runtime passivate and reactivate parts all the time. See README.md,
// "The scale benchmark".

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// The scale systems. Names are fixed: scripts parse the RESULT lines.
const (
	scaleZipf    = "scale-zipf"     // zipfian stream over every part, cap on open parts
	scaleUniform = "scale-uniform"  // uniform stream over every part, same cap
	scaleAllOpen = "scale-all-open" // zipfian stream over the parts that fit open at once, no cap
)

var scaleSystems = []string{scaleZipf, scaleUniform, scaleAllOpen}

// scaleConfig is the workload of one scale run; the parent process passes
// it to each child as flags.
type scaleConfig struct {
	parts      int
	maxActive  int
	allOpen    int
	clients    int
	warm       time.Duration
	duration   time.Duration
	zipfS      float64
	seed       int64
	durability string
	timeout    time.Duration
	checkMax   int
	runs       int
	dir        string // root: the data directory is <dir>/data
	systems    []string
	child      string // set in a child process: the one system it runs
	cpuProfile string // a CPU profile per system: <cpuProfile>.<system>.<run>
}

func (c *scaleConfig) dataDir() string { return filepath.Join(c.dir, "data") }

// durabilityOf maps the -durability flag to the runtime's setting.
func durabilityOf(s string) (actors.Durability, error) {
	for _, d := range []actors.Durability{actors.PowerLoss, actors.PowerLossPerCommit, actors.ProcessCrash} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("-durability must be power-loss, power-loss-per-commit or process-crash, got %q", s)
}

// scalePath is the path of part i: bench/p000000, bench/p000001, ...
func scalePath(i int) string { return fmt.Sprintf("bench/p%06d", i) }

// runScale is `bench scale`: it populates the data directory (once), then
// runs each system in a child process of its own, so that no system's
// memory, descriptors or Go heap are left over for the next one to be
// measured with.
func runScale(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg   scaleConfig
		quick = fs.Bool("quick", false, "quick mode: 20,000 parts, cap 400, all-open 2,000, warm-up 2s, window 5s")
		names = fs.String("systems", strings.Join(scaleSystems, ","), "comma-separated systems to run")
		seed  = fs.Int64("seed", 0, "random seed (default: from the clock)")
	)
	fs.IntVar(&cfg.parts, "parts", 100_000, "parts on disk")
	fs.IntVar(&cfg.maxActive, "cap", 2000, "Options.MaxActiveParts for scale-zipf and scale-uniform")
	fs.IntVar(&cfg.allOpen, "all-open", 0, "parts in scale-all-open's stream, every one kept open (default: what the descriptor limit allows, 3 per part, rounded down to 1,000)")
	fs.IntVar(&cfg.clients, "clients", 256, "closed-loop clients")
	fs.DurationVar(&cfg.warm, "warm", 5*time.Second, "load before the window, not measured")
	fs.DurationVar(&cfg.duration, "duration", 20*time.Second, "measured window per system")
	fs.Float64Var(&cfg.zipfS, "zipf-s", 1.1, "exponent of the zipfian streams (> 1)")
	fs.StringVar(&cfg.durability, "durability", actors.PowerLoss.String(), "power-loss, power-loss-per-commit or process-crash")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up on a system after this long")
	fs.IntVar(&cfg.checkMax, "check", 20_000, "after each system, read back at most this many of the parts it touched (a random sample when it touched more)")
	fs.IntVar(&cfg.runs, "runs", 1, "runs of every system; with more than one, the table shows each run and the medians")
	fs.StringVar(&cfg.dir, "dir", "", "root directory (default: a temporary one, removed at the end); the parts are in <dir>/data, populated once and reused by later runs with the same -parts")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of each system's process (its whole life) to <file>.<system>.<run>")
	fs.StringVar(&cfg.child, "child", "", "internal: run this one system and print its measurements as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["parts"] {
			cfg.parts = 20_000
		}
		if !set["cap"] {
			cfg.maxActive = 400 // parts / cap as in the full run: 50
		}
		if !set["warm"] {
			cfg.warm = 2 * time.Second
		}
		if !set["duration"] {
			cfg.duration = 5 * time.Second
		}
	}
	fdLimit := raiseFDLimit()
	if *quick && !set["all-open"] {
		cfg.allOpen = 2000
	}
	if cfg.allOpen == 0 {
		// Three descriptors per open part, a thousand for the rest.
		n := (int(min(fdLimit.Cur, 1<<24)) - 1000) / 3
		if n >= 1000 {
			n = n / 1000 * 1000
		}
		cfg.allOpen = max(n, 1)
	}
	cfg.allOpen = min(cfg.allOpen, cfg.parts)
	switch {
	case cfg.parts < 1 || cfg.parts > 999_999:
		return fmt.Errorf("-parts must be in [1, 999999], got %d", cfg.parts)
	case cfg.allOpen < 1 || cfg.allOpen > cfg.parts:
		return fmt.Errorf("-all-open must be in [1, -parts], got %d", cfg.allOpen)
	case cfg.maxActive < 1:
		return fmt.Errorf("-cap must be positive, got %d", cfg.maxActive)
	case cfg.clients < 1:
		return fmt.Errorf("-clients must be positive, got %d", cfg.clients)
	case cfg.warm < 0 || cfg.duration <= 0:
		return errors.New("-duration must be positive, -warm not negative")
	case !(cfg.zipfS > 1):
		return fmt.Errorf("-zipf-s must be greater than 1, got %v", cfg.zipfS)
	case cfg.runs < 1:
		return fmt.Errorf("-runs must be positive, got %d", cfg.runs)
	}
	if _, err := durabilityOf(cfg.durability); err != nil {
		return err
	}
	cfg.seed = *seed
	if !set["seed"] {
		cfg.seed = time.Now().UnixNano()
	}
	for _, n := range strings.Split(*names, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(scaleSystems, n) {
			return fmt.Errorf("unknown system %q (known: %s)", n, strings.Join(scaleSystems, ", "))
		}
		cfg.systems = append(cfg.systems, n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.child != "" {
		if cfg.dir == "" {
			return errors.New("-child needs -dir")
		}
		if cfg.cpuProfile != "" {
			f, err := os.Create(cfg.cpuProfile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
		r, err := scaleChild(ctx, &cfg, stderr)
		if err != nil {
			return err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "SCALE %s\n", b)
		return nil
	}

	began := time.Now()
	defer func() { fmt.Fprintf(stderr, "total %s\n", secs(time.Since(began))) }()
	if cfg.dir == "" {
		d, err := os.MkdirTemp("", "fractal-bench-scale-")
		if err != nil {
			return err
		}
		defer func() {
			r0 := time.Now()
			removeAll(d)
			fmt.Fprintf(stderr, "removed %s in %s\n", d, secs(time.Since(r0)))
		}()
		cfg.dir = d
	}

	fmt.Fprintf(stdout, "machine: nproc=%d GOMAXPROCS=%d go=%s kernel=%s %s/%s cpu=%q mem=%s RLIMIT_NOFILE=%d (soft raised to hard)\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), kernelRelease(), runtime.GOOS, runtime.GOARCH, cpuModel(), memTotal(), fdLimit.Cur)
	fmt.Fprintf(stdout, "workload: parts=%d cap=%d all-open=%d clients=%d warm=%v window=%v zipf-s=%v durability=%s runs=%d seed=%d\n",
		cfg.parts, cfg.maxActive, cfg.allOpen, cfg.clients, cfg.warm, cfg.duration, cfg.zipfS, cfg.durability, cfg.runs, cfg.seed)

	pop, reused, err := populate(ctx, &cfg, stderr)
	if err != nil {
		return fmt.Errorf("populate: %w", err)
	}
	if reused {
		fmt.Fprintf(stdout, "populate: %d parts already on disk in %s (reused)\n\n", cfg.parts, cfg.dataDir())
	} else {
		fmt.Fprintf(stdout, "populate: %d parts written in %s (not part of start-up)\n\n", cfg.parts, secs(pop))
	}

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var (
		results []scaleResult
		failed  []string
	)
	for run := 1; run <= cfg.runs; run++ {
		for _, name := range cfg.systems {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stderr, "%-15s run %d/%d\n", name, run, cfg.runs)
			r, err := runScaleChild(ctx, exe, &cfg, name, run, stderr)
			if err != nil {
				fmt.Fprintf(stderr, "%-15s FAILED: %v\n", name, err)
				failed = append(failed, name)
				continue
			}
			r.Run = run
			results = append(results, r)
		}
	}
	printScale(stdout, &cfg, results)
	if len(failed) > 0 {
		return fmt.Errorf("FAILED: %s (see above)", strings.Join(failed, ", "))
	}
	return nil
}

// runScaleChild runs one system in a child process (this program again) and
// returns what it measured. The child's progress goes to stderr.
func runScaleChild(ctx context.Context, exe string, cfg *scaleConfig, name string, run int, stderr io.Writer) (scaleResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout+time.Minute)
	defer cancel()
	var profile []string
	if cfg.cpuProfile != "" {
		profile = []string{"-cpuprofile", fmt.Sprintf("%s.%s.%d", cfg.cpuProfile, name, run)}
	}
	cmd := exec.CommandContext(ctx, exe, append([]string{"scale",
		"-child", name,
		"-dir", cfg.dir,
		"-parts", strconv.Itoa(cfg.parts),
		"-cap", strconv.Itoa(cfg.maxActive),
		"-all-open", strconv.Itoa(cfg.allOpen),
		"-clients", strconv.Itoa(cfg.clients),
		"-warm", cfg.warm.String(),
		"-duration", cfg.duration.String(),
		"-zipf-s", strconv.FormatFloat(cfg.zipfS, 'g', -1, 64),
		"-seed", strconv.FormatInt(cfg.seed, 10),
		"-durability", cfg.durability,
		"-timeout", cfg.timeout.String(),
		"-check", strconv.Itoa(cfg.checkMax),
		"-systems", name,
	}, profile...)...)
	cmd.Stderr = stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return scaleResult{}, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if js, ok := strings.CutPrefix(sc.Text(), "SCALE "); ok {
			var r scaleResult
			if err := json.Unmarshal([]byte(js), &r); err != nil {
				return scaleResult{}, err
			}
			return r, nil
		}
	}
	return scaleResult{}, errors.New("the child printed no result")
}

// raiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and returns
// the limit now in force. (Go raises it at start-up already, since 1.19,
// but restores the original one for the processes it starts; a Go child
// raises its own again. Doing it here says so, and works either way.)
func raiseFDLimit() syscall.Rlimit {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return syscall.Rlimit{Cur: 1024, Max: 1024}
	}
	if lim.Cur < lim.Max {
		raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return lim
}

// populate creates cfg.parts parts in the data directory without the
// runtime, unless a previous populate left exactly that many: one part is
// created through the runtime (which also creates its parent, "bench"), its
// file is copied to every other part's directory, and the parent's record of
// its children gets a row per part, as if each had been activated once.
// Everything is synced before it returns, so that the first system measured
// does not pay for writing it back.
func populate(ctx context.Context, cfg *scaleConfig, log io.Writer) (time.Duration, bool, error) {
	marker := filepath.Join(cfg.dir, "populated")
	want := strconv.Itoa(cfg.parts)
	if b, err := os.ReadFile(marker); err == nil && strings.TrimSpace(string(b)) == want {
		return 0, true, nil
	}
	data := cfg.dataDir()
	if err := os.RemoveAll(data); err != nil {
		return 0, false, err
	}
	t0 := time.Now()
	fmt.Fprintf(log, "populate: %d parts in %s...", cfg.parts, data)
	sys, err := actors.Open(ctx, data, actors.Options{Kinds: benchKinds(), Durability: actors.ProcessCrash})
	if err != nil {
		return 0, false, err
	}
	if _, err := sys.Request(ctx, scalePath(0), incr{}); err != nil {
		sys.Close(ctx)
		return 0, false, err
	}
	if err := sys.Close(ctx); err != nil {
		return 0, false, err
	}
	template, err := os.ReadFile(actors.MustParsePath(scalePath(0)).File(data))
	if err != nil {
		return 0, false, err
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(actors.MustParsePath(scalePath(0)).File(data) + suffix); err == nil {
			return 0, false, fmt.Errorf("the template part left a %s file after Close", suffix)
		}
	}

	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next.Store(1)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.parts || ctx.Err() != nil {
					return
				}
				p := actors.MustParsePath(scalePath(i))
				err := os.Mkdir(p.Dir(data), 0o755)
				if err == nil {
					err = os.WriteFile(p.File(data), template, 0o644)
				}
				if err != nil {
					mu.Lock()
					first = firstErr(first, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, false, first
	}
	if err := ctx.Err(); err != nil {
		return 0, false, err
	}

	// The parent's record of its children (see System.Children): one row
	// per part, which the runtime would have written at each first
	// activation. The table exists already: the template part was recorded.
	parent, err := persistence.Open(ctx, actors.MustParsePath("bench").File(data), &persistence.Options{Sync: persistence.SyncNormal})
	if err != nil {
		return 0, false, err
	}
	err = parent.Update(ctx, func(tx *persistence.Tx) error {
		for i := 1; i < cfg.parts; i++ {
			if _, err := tx.Exec(`INSERT OR IGNORE INTO _fractal_children (name) VALUES (?)`, actors.MustParsePath(scalePath(i)).Name()); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := parent.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, false, fmt.Errorf("recording the children in the parent: %w", err)
	}
	syscall.Sync()
	if err := os.WriteFile(marker, []byte(want+"\n"), 0o644); err != nil {
		return 0, false, err
	}
	d := time.Since(t0)
	fmt.Fprintf(log, " %s\n", secs(d))
	return d, false, nil
}

// removeAll removes dir like os.RemoveAll, the parts' directories eight at
// a time: one by one, removing 100,000 of them takes minutes on a virtual
// disk mounted with online discard.
func removeAll(dir string) {
	parts := filepath.Join(dir, "data", actors.EncodeSegment("bench"))
	if entries, err := os.ReadDir(parts); err == nil {
		var (
			next atomic.Int64
			wg   sync.WaitGroup
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < len(entries); i = int(next.Add(1) - 1) {
					os.RemoveAll(filepath.Join(parts, entries[i].Name()))
				}
			}()
		}
		wg.Wait()
	}
	os.RemoveAll(dir)
}

func firstErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// scaleResult is what one system measured in one child process.
type scaleResult struct {
	System string `json:"system"`
	Run    int    `json:"run"`

	Universe  int `json:"universe"`   // parts the stream chooses from
	MaxActive int `json:"max_active"` // Options.MaxActiveParts; -1: no cap

	OpenMs       float64 `json:"open_ms"`         // actors.Open
	FirstMs      float64 `json:"first_ms"`        // the first request, parent activation included
	PreopenS     float64 `json:"preopen_s"`       // scale-all-open: opening every part of its stream
	RSSPerPartKB float64 `json:"rss_per_part_kb"` // scale-all-open: RSS per open idle part

	Ops        int64   `json:"ops"` // replies inside the window
	WindowS    float64 `json:"window_s"`
	ColdOps    int64   `json:"cold_ops"` // of which to parts not active when sent
	Passivated uint64  `json:"passivated"`
	Messages   uint64  `json:"messages"`
	Commits    uint64  `json:"commits"`
	Syncs      uint64  `json:"syncs"`

	ColdP50us float64 `json:"cold_p50_us"` // request to a part not active when sent: send to reply
	ColdP99us float64 `json:"cold_p99_us"`
	WarmP50us float64 `json:"warm_p50_us"` // request to an active part: send to reply
	WarmP99us float64 `json:"warm_p99_us"`
	// The runtime's fractal_activation_duration_seconds over the window
	// (open, migrate, Activate), interpolated in its buckets.
	ActN     uint64  `json:"act_n"`
	ActP50us float64 `json:"act_p50_us"`
	ActP99us float64 `json:"act_p99_us"`
	// fractal_barrier_sync_duration_seconds over the window: one syncfs.
	SyncP50us float64 `json:"sync_p50_us"`
	SyncP99us float64 `json:"sync_p99_us"`

	ActiveEnd  int     `json:"active_end"`  // active parts at the end of the window
	ActivePeak int     `json:"active_peak"` // sampled every 0.5 s
	RSSEndMiB  float64 `json:"rss_end_mib"` // VmRSS at the end of the window
	RSSPeakMiB float64 `json:"rss_peak_mib"`
	RSSIdleMiB float64 `json:"rss_idle_mib"` // after the window, after a GC that returns memory to the OS
	FDsEnd     int     `json:"fds_end"`
	FDsPeak    int     `json:"fds_peak"` // sampled every 2 s

	CPUs     float64  `json:"cpu_s"`     // CPU time of the process (user + system) during the window
	Load1    float64  `json:"load1"`     // the machine's 1-minute load average at the end of the window
	RSSParts rssParts `json:"rss_parts"` // scale-all-open: what an open idle part holds, by kind of memory

	Touched int     `json:"touched"` // parts that got a request
	Checked int     `json:"checked"` // of which read back after Close
	CloseMs float64 `json:"close_ms"`
}

func (r *scaleResult) rate() float64 { return float64(r.Ops) / r.WindowS }

func (r *scaleResult) startupMs() float64 { return r.OpenMs + r.FirstMs }

// cpuPerMsgUs is the process's CPU time per message handled in the window:
// unlike msgs/s, it hardly moves when other processes share the cores.
func (r *scaleResult) cpuPerMsgUs() float64 { return 1e6 * r.CPUs / float64(max(r.Messages, 1)) }

// scaleChild runs one system: open, first request, (scale-all-open: open
// every part of the stream), warm-up, the measured window, close, check.
func scaleChild(ctx context.Context, cfg *scaleConfig, log io.Writer) (scaleResult, error) {
	name := cfg.child
	r := scaleResult{System: name, Universe: cfg.parts, MaxActive: cfg.maxActive}
	if name == scaleAllOpen {
		r.Universe, r.MaxActive = cfg.allOpen, -1
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	dur, err := durabilityOf(cfg.durability)
	if err != nil {
		return r, err
	}
	paths := make([]string, r.Universe)
	for i := range paths {
		paths[i] = scalePath(i)
	}
	// Nothing of an earlier process stays dirty to be synced on our time.
	syscall.Sync()
	runtime.GC()
	debug.FreeOSMemory()

	reg := prometheus.NewRegistry()
	t0 := time.Now()
	sys, err := actors.Open(ctx, cfg.dataDir(), actors.Options{
		Kinds:          benchKinds(),
		Durability:     dur,
		MaxActiveParts: r.MaxActive,
		Registerer:     reg,
	})
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	closed := false
	defer func() {
		if !closed {
			sys.Close(context.Background())
		}
	}()
	v, err := sys.Request(ctx, paths[0], incr{})
	if err != nil {
		return r, fmt.Errorf("first request: %w", err)
	}
	r.OpenMs, r.FirstMs = ms(t1.Sub(t0)), ms(time.Since(t1))
	fmt.Fprintf(log, "%-15s start-up %.1f ms (Open %.1f ms, first request %.1f ms)", name, r.startupMs(), r.OpenMs, r.FirstMs)
	tr := newTracker(r.Universe)
	tr.add(0, v.(int64))
	if name == scaleAllOpen {
		base := idleRSS()
		mem0 := readMem()
		p0 := time.Now()
		if err := openAll(ctx, sys, paths, tr); err != nil {
			fmt.Fprintln(log)
			return r, fmt.Errorf("opening every part: %w", err)
		}
		r.PreopenS = time.Since(p0).Seconds()
		// Let the barrier release what the warm-up committed, then
		// measure what the open parts hold while idle.
		time.Sleep(200 * time.Millisecond)
		r.RSSPerPartKB = (idleRSS() - base) / 1024 / float64(r.Universe-1)
		r.RSSParts = readMem().minus(mem0).per(r.Universe - 1)
		fmt.Fprintf(log, " | %d parts opened in %.1fs, %.1f KiB RSS each while idle", r.Universe, r.PreopenS, r.RSSPerPartKB)
	}

	fmt.Fprintf(log, " | warm %v, window %v...", cfg.warm, cfg.duration)
	if err := scaleLoop(ctx, cfg, sys, reg, paths, tr, &r); err != nil {
		fmt.Fprintln(log)
		return r, err
	}
	fmt.Fprintf(log, " %.0f msgs/s, %.0f%% cold, %.0f passivations/s (%d since Open), CPU %.0f%% of %d cores, load %.1f",
		r.rate(), 100*float64(r.ColdOps)/float64(max(r.Ops, 1)), float64(r.Passivated)/r.WindowS, sys.Stats().Passivations,
		100*r.CPUs/r.WindowS/float64(runtime.NumCPU()), runtime.NumCPU(), r.Load1)

	c0 := time.Now()
	closed = true
	if err := sys.Close(ctx); err != nil {
		fmt.Fprintln(log)
		return r, fmt.Errorf("close: %w", err)
	}
	r.CloseMs = ms(time.Since(c0))
	fmt.Fprintf(log, " | closed in %.1fs | check...", r.CloseMs/1000)
	k0 := time.Now()
	if err := tr.check(ctx, cfg, &r); err != nil {
		fmt.Fprintln(log)
		return r, err
	}
	fmt.Fprintf(log, " %s: ok, %d of %d touched parts read back\n", secs(time.Since(k0)), r.Checked, r.Touched)
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// openAll sends one request to every part, 64 in flight, so that every part
// of scale-all-open's stream is open before it starts.
func openAll(ctx context.Context, sys *actors.System, paths []string, tr *tracker) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		e    errs
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(paths) || ctx.Err() != nil {
					return
				}
				v, err := sys.Request(ctx, paths[i], incr{})
				if err != nil {
					e.add(fmt.Errorf("%s: %w", paths[i], err))
					continue
				}
				tr.add(i, v.(int64))
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return e.err()
}

// scaleLoop runs the closed loop: cfg.clients clients, each picking parts
// from its own generator (zipfian or uniform over r.Universe parts), for
// cfg.warm and then the measured window. A request is "cold" when its part
// was not active just before it was sent (System.Active): that request
// waits for an activation. Its latency runs from the send to the reply.
func scaleLoop(ctx context.Context, cfg *scaleConfig, sys *actors.System, reg *prometheus.Registry,
	paths []string, tr *tracker, r *scaleResult) error {
	var (
		cold, warm histogram
		ops, cops  atomic.Int64
		e          errs
		wg         sync.WaitGroup
		start      = make(chan struct{})
	)
	var from, deadline time.Time
	for i := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cfg.seed), uint64(i)))
			pick := func() int { return rng.IntN(len(paths)) }
			if r.System != scaleUniform {
				z := rand.NewZipf(rng, cfg.zipfS, 1, uint64(len(paths)-1))
				pick = func() int { return int(z.Uint64()) }
			}
			<-start
			var in, incold int64
			for {
				runtime.Gosched() // see closedLoop
				if !time.Now().Before(deadline) || ctx.Err() != nil {
					break
				}
				k := pick()
				isCold := !sys.Active(paths[k])
				sent := time.Now()
				v, err := sys.Request(ctx, paths[k], incr{})
				done := time.Now()
				if err != nil {
					e.add(fmt.Errorf("%s: %w", paths[k], err))
					continue
				}
				tr.add(k, v.(int64))
				if done.Before(from) {
					continue
				}
				h := &warm
				if isCold {
					h = &cold
				}
				h.record(i, done.Sub(sent))
				if done.Before(deadline) {
					in++
					if isCold {
						incold++
					}
				}
			}
			ops.Add(in)
			cops.Add(incold)
		}()
	}

	var (
		samp     sync.WaitGroup
		stopSamp = make(chan struct{})
		peakFDs  atomic.Int64
		peakAct  atomic.Int64
	)
	samp.Add(1)
	go func() {
		defer samp.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopSamp:
				return
			case <-t.C:
				// Listing /proc/self/fd costs about a millisecond of
				// kernel time per thousand descriptors: every 2 s only.
				if i%4 == 3 {
					if n := int64(countFDs()); n > peakFDs.Load() {
						peakFDs.Store(n)
					}
				}
				if n := int64(activeParts(reg)); n > peakAct.Load() {
					peakAct.Store(n)
				}
			}
		}
	}()

	t0 := time.Now()
	from = t0.Add(cfg.warm)
	deadline = from.Add(cfg.duration)
	close(start)
	time.Sleep(time.Until(from))
	s0, h0, c0 := sys.Stats(), hists(reg), cpuTime()
	time.Sleep(time.Until(deadline))
	s1, h1, c1 := sys.Stats(), hists(reg), cpuTime()
	r.CPUs = (c1 - c0).Seconds()
	r.Load1 = loadAvg()
	r.RSSEndMiB = float64(procStatusKB("VmRSS")) / 1024
	r.FDsEnd = countFDs()
	r.ActiveEnd = activeParts(reg)
	wg.Wait()
	close(stopSamp)
	samp.Wait()
	if err := e.err(); err != nil {
		return err
	}

	r.WindowS = cfg.duration.Seconds()
	r.Ops, r.ColdOps = ops.Load(), cops.Load()
	r.Passivated = s1.Passivations - s0.Passivations
	r.Messages = s1.Messages - s0.Messages
	r.Commits = s1.Commits - s0.Commits
	r.Syncs = s1.Syncs - s0.Syncs
	cl, wl := cold.snapshot(), warm.snapshot()
	r.ColdP50us, r.ColdP99us = us(cl.quantile(0.5)), us(cl.quantile(0.99))
	r.WarmP50us, r.WarmP99us = us(wl.quantile(0.5)), us(wl.quantile(0.99))
	act := h1[histActivation].minus(h0[histActivation])
	r.ActN = act.n
	r.ActP50us, r.ActP99us = act.quantile(0.5)*1e6, act.quantile(0.99)*1e6
	syn := h1[histSync].minus(h0[histSync])
	r.SyncP50us, r.SyncP99us = syn.quantile(0.5)*1e6, syn.quantile(0.99)*1e6
	r.FDsPeak = max(int(peakFDs.Load()), r.FDsEnd)
	r.ActivePeak = max(int(peakAct.Load()), r.ActiveEnd)
	r.RSSPeakMiB = float64(procStatusKB("VmHWM")) / 1024
	r.RSSIdleMiB = idleRSS() / (1 << 20)
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// tracker keeps, per part, the replies it acknowledged: how many, the
// smallest and the largest. A part's counter only grows by one per
// acknowledged request, so after Close its file must hold the largest reply,
// and the replies must be exactly the values from the smallest to the
// largest: nothing lost, nothing counted twice.
type tracker struct {
	n, lo, hi []atomic.Int64
}

func newTracker(parts int) *tracker {
	t := &tracker{n: make([]atomic.Int64, parts), lo: make([]atomic.Int64, parts), hi: make([]atomic.Int64, parts)}
	for i := range t.lo {
		t.lo[i].Store(math.MaxInt64)
	}
	return t
}

func (t *tracker) add(part int, v int64) {
	t.n[part].Add(1)
	for lo := t.lo[part].Load(); v < lo && !t.lo[part].CompareAndSwap(lo, v); lo = t.lo[part].Load() {
	}
	for hi := t.hi[part].Load(); v > hi && !t.hi[part].CompareAndSwap(hi, v); hi = t.hi[part].Load() {
	}
}

// check reads back the touched parts (a random sample of cfg.checkMax of
// them when there are more) from their closed files.
func (t *tracker) check(ctx context.Context, cfg *scaleConfig, r *scaleResult) error {
	var touched []int
	for i := range t.n {
		if t.n[i].Load() > 0 {
			touched = append(touched, i)
		}
	}
	r.Touched = len(touched)
	if len(touched) > cfg.checkMax {
		rng := rand.New(rand.NewPCG(uint64(cfg.seed), 1<<61))
		rng.Shuffle(len(touched), func(i, j int) { touched[i], touched[j] = touched[j], touched[i] })
		touched = touched[:cfg.checkMax]
	}
	r.Checked = len(touched)
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		e    errs
	)
	data := cfg.dataDir()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1) - 1)
				if j >= len(touched) {
					return
				}
				i := touched[j]
				n, lo, hi := t.n[i].Load(), t.lo[i].Load(), t.hi[i].Load()
				got, err := readCounter(ctx, actors.MustParsePath(scalePath(i)).File(data))
				switch {
				case err != nil:
					e.add(err)
				case got != hi || hi-lo+1 != n:
					e.add(fmt.Errorf("CORRECTNESS: %s holds %d; %d requests acknowledged with replies from %d to %d", scalePath(i), got, n, lo, hi))
				}
			}
		}()
	}
	wg.Wait()
	return e.err()
}

// idleRSS returns the resident set in bytes after a GC that returns free
// memory to the operating system.
func idleRSS() float64 {
	runtime.GC()
	debug.FreeOSMemory()
	return float64(procStatusKB("VmRSS")) * 1024
}

// procStatusKB reads one "kB" field of /proc/self/status (VmRSS, VmHWM).
func procStatusKB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// countFDs counts the process's open descriptors (the one reading
// /proc/self/fd excepted).
func countFDs() int {
	f, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		n += len(names)
		if err != nil {
			break
		}
	}
	return n - 1
}

// activeParts reads the runtime's fractal_active_parts gauge (every kind).
func activeParts(reg *prometheus.Registry) int {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == "fractal_active_parts" {
			for _, m := range mf.GetMetric() {
				n += int(m.GetGauge().GetValue())
			}
		}
	}
	return n
}

// bucketHist is a snapshot of a Prometheus histogram: cumulative counts at
// upper bounds (seconds).
type bucketHist struct {
	bounds []float64
	cum    []uint64
	n      uint64
}

// The runtime's histograms the scale benchmark reads.
const (
	histActivation = "fractal_activation_duration_seconds"   // kind="part"
	histSync       = "fractal_barrier_sync_duration_seconds" // PowerLoss only
)

// hists reads the histograms above.
func hists(reg *prometheus.Registry) map[string]bucketHist {
	return map[string]bucketHist{
		histActivation: readHist(reg, histActivation, "part"),
		histSync:       readHist(reg, histSync, ""),
	}
}

// readHist reads the histogram name, the child of the given kind label
// when kind is not empty.
func readHist(reg *prometheus.Registry, name, kind string) bucketHist {
	mfs, err := reg.Gather()
	if err != nil {
		return bucketHist{}
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if kind != "" && !hasLabel(m, "kind", kind) {
				continue
			}
			h := m.GetHistogram()
			var b bucketHist
			for _, bk := range h.GetBucket() {
				b.bounds = append(b.bounds, bk.GetUpperBound())
				b.cum = append(b.cum, bk.GetCumulativeCount())
			}
			b.n = h.GetSampleCount()
			return b
		}
	}
	return bucketHist{}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// minus returns the observations made between o and h.
func (h bucketHist) minus(o bucketHist) bucketHist {
	d := bucketHist{bounds: h.bounds, cum: make([]uint64, len(h.cum)), n: h.n - o.n}
	for i := range h.cum {
		d.cum[i] = h.cum[i]
		if i < len(o.cum) {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

// quantile interpolates linearly inside the bucket that holds rank q*n, as
// Prometheus's histogram_quantile does; beyond the last bound it returns
// that bound.
func (h bucketHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := q * float64(h.n)
	lo, below := 0.0, uint64(0)
	for i, c := range h.cum {
		if float64(c) >= rank {
			if c == below {
				return h.bounds[i]
			}
			return lo + (h.bounds[i]-lo)*(rank-float64(below))/float64(c-below)
		}
		lo, below = h.bounds[i], c
	}
	return lo
}

func kernelRelease() string {
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "unknown"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return fmt.Sprintf("%.1fGiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

// printScale prints the table (every run, then the medians when there are
// several), the targets, and one RESULT line per system.
func printScale(w io.Writer, cfg *scaleConfig, results []scaleResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\trun\tparts\tcap\tmsgs/s\tcold %\tact p50\tact p99\twarm p50\tpassiv/s\tRSS MiB\tpeak\tfds\tpeak\tactive\tpeak\tstartup\tCPU/msg\tload\t")
	row := func(r scaleResult, run string) {
		capStr := strconv.Itoa(r.MaxActive)
		if r.MaxActive < 0 {
			capStr = "none"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%.1f\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%d\t%d\t%d\t%d\t%.0fms\t%.0fµs\t%.1f\t\n",
			r.System, run, r.Universe, capStr, r.rate(), 100*float64(r.ColdOps)/float64(max(r.Ops, 1)),
			fmtDur(time.Duration(r.ColdP50us*1e3)), fmtDur(time.Duration(r.ColdP99us*1e3)), fmtDur(time.Duration(r.WarmP50us*1e3)),
			float64(r.Passivated)/r.WindowS, r.RSSEndMiB, r.RSSPeakMiB, r.FDsEnd, r.FDsPeak, r.ActiveEnd, r.ActivePeak, r.startupMs(),
			r.cpuPerMsgUs(), r.Load1)
	}
	for _, r := range results {
		row(r, strconv.Itoa(r.Run))
	}
	med := medians(cfg, results)
	if cfg.runs > 1 {
		for _, r := range med {
			row(r, "median")
		}
	}
	tw.Flush()

	fmt.Fprintln(w)
	fmt.Fprintln(w, "msgs/s: replies inside the window. cold %: requests sent to a part that was not active (System.Active) when sent.")
	fmt.Fprintln(w, "act p50/p99: latency of those cold requests, send to reply (activation, handler, commit, durability wait); warm p50: the others.")
	fmt.Fprintln(w, "RSS, fds, active: at the end of the window; peak: VmHWM, and the highest of samples (active parts every 0.5 s, descriptors every 2 s). startup: Open + first request.")
	fmt.Fprintln(w, "CPU/msg: the process's CPU time (user + system) in the window per message handled; load: the machine's 1-minute load average at the window's end.")
	for _, r := range med {
		fmt.Fprintf(w, "%s: runtime's activation histogram (open, migrate; buckets x2.5, interpolated) n=%d p50=%s p99=%s; commits %d, mean batch %.1f; barrier syncs %d, p50 %s p99 %s (same kind of histogram); idle RSS after GC %.0f MiB",
			r.System, r.ActN, fmtDur(time.Duration(r.ActP50us*1e3)), fmtDur(time.Duration(r.ActP99us*1e3)),
			r.Commits, float64(r.Messages)/float64(max(r.Commits, 1)), r.Syncs,
			fmtDur(time.Duration(r.SyncP50us*1e3)), fmtDur(time.Duration(r.SyncP99us*1e3)), r.RSSIdleMiB)
		if r.System == scaleAllOpen {
			p := r.RSSParts
			fmt.Fprintf(w, "; %d parts opened in %.1fs, %.1f KiB RSS per open idle part (Go heap %.1f, stacks %.1f, other anonymous %.1f, shared/file %.1f)",
				r.Universe, r.PreopenS, r.RSSPerPartKB, p.GoHeapKB, p.StacksKB, p.OtherAnon, p.SharedKB)
		}
		fmt.Fprintf(w, "; %d of %d touched parts read back and checked\n", r.Checked, r.Touched)
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "targets:")
	byName := map[string]scaleResult{}
	for _, r := range med {
		byName[r.System] = r
	}
	for _, name := range []string{scaleZipf, scaleUniform} {
		if r, ok := byName[name]; ok {
			fmt.Fprintf(w, "  %s: %d parts on disk, cap %d: peak RSS %.0f MiB (target <= 1024): %s\n",
				name, cfg.parts, r.MaxActive, r.RSSPeakMiB, verdict(r.RSSPeakMiB <= 1024))
		}
	}
	if r, ok := byName[scaleAllOpen]; ok {
		fmt.Fprintf(w, "  %s: %.1f KiB RSS per open idle part (target <= 100): %s\n", scaleAllOpen, r.RSSPerPartKB, verdict(r.RSSPerPartKB <= 100))
	}
	z, zok := byName[scaleZipf]
	a, aok := byName[scaleAllOpen]
	if zok && aok && a.rate() > 0 {
		fmt.Fprintf(w, "  %s / %s msgs/s = %.2f (target >= 0.50): %s (scale-all-open streams over the %d hottest parts only, all open);\n",
			scaleZipf, scaleAllOpen, z.rate()/a.rate(), verdict(z.rate()/a.rate() >= 0.5), a.Universe)
		fmt.Fprintf(w, "    the same ratio in CPU per message (what it would be if both were bound by this process's CPU; other load moves it less): %.0f µs / %.0f µs = %.2f\n",
			a.cpuPerMsgUs(), z.cpuPerMsgUs(), a.cpuPerMsgUs()/z.cpuPerMsgUs())
	}

	fmt.Fprintln(w)
	for _, r := range med {
		fmt.Fprintf(w, "RESULT system=%s msgs_per_s=%d activation_p50_us=%d activation_p99_us=%d passivations_per_s=%d rss_mib=%d rss_peak_mib=%d fds=%d fds_peak=%d startup_ms=%d",
			r.System, int64(math.Round(r.rate())), int64(r.ColdP50us), int64(r.ColdP99us), int64(math.Round(float64(r.Passivated)/r.WindowS)),
			int64(math.Round(r.RSSEndMiB)), int64(math.Round(r.RSSPeakMiB)), r.FDsEnd, r.FDsPeak, int64(math.Round(r.startupMs())))
		if r.System == scaleAllOpen {
			fmt.Fprintf(w, " rss_per_open_part_kib=%.1f", r.RSSPerPartKB)
		}
		fmt.Fprintln(w)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// medians returns, per system, the median of each figure over its runs
// (each figure on its own: a median row need not be one run).
func medians(cfg *scaleConfig, results []scaleResult) []scaleResult {
	var out []scaleResult
	for _, name := range cfg.systems {
		var rs []scaleResult
		for _, r := range results {
			if r.System == name {
				rs = append(rs, r)
			}
		}
		if len(rs) == 0 {
			continue
		}
		m := rs[0]
		f := func(get func(r *scaleResult) float64) float64 {
			v := make([]float64, len(rs))
			for i := range rs {
				v[i] = get(&rs[i])
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		// The rate's median is taken on ops (the window is the same).
		m.Ops = int64(f(func(r *scaleResult) float64 { return float64(r.Ops) }))
		m.ColdOps = int64(f(func(r *scaleResult) float64 { return float64(r.ColdOps) }))
		m.Passivated = uint64(f(func(r *scaleResult) float64 { return float64(r.Passivated) }))
		m.Messages = uint64(f(func(r *scaleResult) float64 { return float64(r.Messages) }))
		m.Commits = uint64(f(func(r *scaleResult) float64 { return float64(r.Commits) }))
		m.Syncs = uint64(f(func(r *scaleResult) float64 { return float64(r.Syncs) }))
		m.OpenMs = f(func(r *scaleResult) float64 { return r.OpenMs })
		m.FirstMs = f(func(r *scaleResult) float64 { return r.FirstMs })
		m.PreopenS = f(func(r *scaleResult) float64 { return r.PreopenS })
		m.RSSPerPartKB = f(func(r *scaleResult) float64 { return r.RSSPerPartKB })
		for _, r := range rs {
			if r.RSSPerPartKB == m.RSSPerPartKB {
				m.RSSParts = r.RSSParts // the breakdown of the median run
			}
		}
		m.ColdP50us = f(func(r *scaleResult) float64 { return r.ColdP50us })
		m.ColdP99us = f(func(r *scaleResult) float64 { return r.ColdP99us })
		m.WarmP50us = f(func(r *scaleResult) float64 { return r.WarmP50us })
		m.WarmP99us = f(func(r *scaleResult) float64 { return r.WarmP99us })
		m.ActN = uint64(f(func(r *scaleResult) float64 { return float64(r.ActN) }))
		m.ActP50us = f(func(r *scaleResult) float64 { return r.ActP50us })
		m.ActP99us = f(func(r *scaleResult) float64 { return r.ActP99us })
		m.SyncP50us = f(func(r *scaleResult) float64 { return r.SyncP50us })
		m.SyncP99us = f(func(r *scaleResult) float64 { return r.SyncP99us })
		m.ActiveEnd = int(f(func(r *scaleResult) float64 { return float64(r.ActiveEnd) }))
		m.ActivePeak = int(f(func(r *scaleResult) float64 { return float64(r.ActivePeak) }))
		m.RSSEndMiB = f(func(r *scaleResult) float64 { return r.RSSEndMiB })
		m.RSSPeakMiB = f(func(r *scaleResult) float64 { return r.RSSPeakMiB })
		m.RSSIdleMiB = f(func(r *scaleResult) float64 { return r.RSSIdleMiB })
		m.FDsEnd = int(f(func(r *scaleResult) float64 { return float64(r.FDsEnd) }))
		m.FDsPeak = int(f(func(r *scaleResult) float64 { return float64(r.FDsPeak) }))
		m.Touched = int(f(func(r *scaleResult) float64 { return float64(r.Touched) }))
		m.Checked = int(f(func(r *scaleResult) float64 { return float64(r.Checked) }))
		m.CloseMs = f(func(r *scaleResult) float64 { return r.CloseMs })
		m.CPUs = f(func(r *scaleResult) float64 { return r.CPUs })
		m.Load1 = f(func(r *scaleResult) float64 { return r.Load1 })
		out = append(out, m)
	}
	return out
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg returns the machine's 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b) + " 0")[0], 64)
	return f
}

// rssParts splits resident memory (KiB) by where it is: the Go heap in use,
// goroutine stacks, anonymous memory outside them (SQLite's own
// allocations: modernc's C heap is mmap'ed outside the Go heap), and
// file-backed or shared pages (the -shm files SQLite maps).
type rssParts struct {
	GoHeapKB  float64 `json:"go_heap_kb"`
	StacksKB  float64 `json:"stacks_kb"`
	OtherAnon float64 `json:"other_anon_kb"`
	SharedKB  float64 `json:"shared_kb"`
}

type memSample struct {
	heap, stacks      float64 // bytes
	anon, file, shmem float64 // bytes
}

// readMem samples memory after a GC that returns free memory to the OS.
func readMem() memSample {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{
		heap: float64(ms.HeapInuse), stacks: float64(ms.StackInuse),
		anon:  float64(procStatusKB("RssAnon")) * 1024,
		file:  float64(procStatusKB("RssFile")) * 1024,
		shmem: float64(procStatusKB("RssShmem")) * 1024,
	}
}

func (m memSample) minus(o memSample) memSample {
	return memSample{m.heap - o.heap, m.stacks - o.stacks, m.anon - o.anon, m.file - o.file, m.shmem - o.shmem}
}

func (m memSample) per(n int) rssParts {
	k := 1024 * float64(n)
	return rssParts{
		GoHeapKB:  m.heap / k,
		StacksKB:  m.stacks / k,
		OtherAnon: (m.anon - m.heap - m.stacks) / k,
		SharedKB:  (m.file + m.shmem) / k,
	}
}
