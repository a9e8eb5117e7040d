package chaos

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

var (
	crashCycles = flag.Int("chaos.cycles", 8, "TestCrash: kill -9 and restart cycles (make chaos: 200)")
	crashDrain  = flag.Duration("chaos.drain", 2*time.Minute, "TestCrash: the bound, on the wall clock, of the final run that waits for the alarms and durable messages still due (its own clock runs ahead: see drainAlarms)")
	crashDir    = flag.String("chaos.dir", "", "TestCrash: data directory to use and keep (default: a temporary one)")
)

// The crash workload. Every write carries an id unique to its attempt (a
// write is never retried), is inserted into a table without a uniqueness
// constraint, and counted: a write applied twice shows as a repeated id,
// a write applied in part as a count that differs from the rows.
type crashWrite struct {
	ID    string
	Alarm string        // when set, the write also sets this durable alarm,
	In    time.Duration // due in In
	To    string        // when set, the write also sends a durable crashEcho there
}

// crashEcho is the durable message a write sends: its receiver records the
// id in received, without a uniqueness constraint, so a message handled
// twice shows.
type crashEcho struct{ ID string }

func init() { actors.MustRegisterMessage[crashEcho]("chaos.echo") }

var crashMigrations = []persistence.Migration{{Name: "crash workload", SQL: `
	CREATE TABLE applied (id TEXT NOT NULL, alarm TEXT, fwd TEXT);
	CREATE TABLE received (id TEXT NOT NULL);
	CREATE TABLE counter (n INTEGER NOT NULL);
	INSERT INTO counter VALUES (0);
	CREATE TABLE fired (name TEXT NOT NULL);`}}

func crashHandler(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case crashWrite:
		var alarm any
		if m.Alarm != "" {
			alarm = m.Alarm
		}
		var fwd any
		if m.To != "" {
			fwd = m.To
			if err := c.SendDurable(m.To, crashEcho{ID: m.ID}); err != nil {
				return nil, err
			}
		}
		if _, err := c.Exec(`INSERT INTO applied (id, alarm, fwd) VALUES (?, ?, ?)`, m.ID, alarm, fwd); err != nil {
			return nil, err
		}
		if _, err := c.Exec(`UPDATE counter SET n = n + 1`); err != nil {
			return nil, err
		}
		if m.Alarm != "" {
			return nil, c.SetAlarm(m.Alarm, time.Now().Add(m.In))
		}
		return nil, nil
	case actors.Alarm:
		_, err := c.Exec(`INSERT INTO fired (name) VALUES (?)`, m.Name)
		return nil, err
	case crashEcho:
		_, err := c.Exec(`INSERT INTO received (id) VALUES (?)`, m.ID)
		return nil, err
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// crashKinds: a whole, four groups, sixteen leaves per group. Leaves and
// groups go idle fast so that passivation runs all the time, on top of the
// cap on active parts the child sets.
func crashKinds() []actors.Kind {
	h := actors.HandlerFunc(crashHandler)
	return []actors.Kind{
		{Name: "whole", Pattern: "w", Migrations: crashMigrations, Handler: h, IdleTimeout: -1},
		{Name: "group", Pattern: "w/*", Migrations: crashMigrations, Handler: h, IdleTimeout: 60 * time.Millisecond},
		{Name: "leaf", Pattern: "w/*/*", Migrations: crashMigrations, Handler: h, IdleTimeout: 20 * time.Millisecond},
	}
}

// crashMaxActive caps the child's active parts well below the 69 parts.
const crashMaxActive = 12

// crashPaths are the parts written to: names that need the segment
// encoding (case pairs, '@', spaces, '%', non-ASCII, a leading '_').
var crashPaths = func() []string {
	leaves := []string{"a", "A", "alice@example.org", "Alice@example.org", "ü", "Ü", "x y", "x%y",
		"_under", "...", "-", "~", "p1", "p2", "P1", "P2"}
	var out []string
	for g := range 4 {
		group := fmt.Sprintf("w/g%d", g)
		out = append(out, group)
		for _, l := range leaves {
			out = append(out, group+"/"+l)
		}
	}
	return out
}()

const crashWorkers = 16

// crashChild is the child process of TestCrash: it opens the System and
// writes until it is killed, printing each write before it is sent
// ("sent"), and again once acknowledged ("ack") or refused ("err").
func crashChild() int {
	out := &lineWriter{w: os.Stdout}
	dir := os.Getenv("FRACTAL_CHAOS_DIR")
	cycle, _ := strconv.Atoi(os.Getenv("FRACTAL_CHAOS_CYCLE"))
	seed, _ := strconv.ParseUint(os.Getenv("FRACTAL_CHAOS_SEED"), 10, 64)
	durability := actors.Durability(cycle % 3)
	ctx := context.Background()
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: crashKinds(), Durability: durability, MaxActiveParts: crashMaxActive})
	if err != nil {
		out.printf("fatal\topen: %v", err)
		return 1
	}
	out.printf("ready\t%s", durability)
	go func() {
		for range time.Tick(50 * time.Millisecond) {
			st := sys.Stats()
			out.printf("stats\t%d\t%d", st.Passivations, st.Messages)
		}
	}()
	for w := range crashWorkers {
		go func() {
			r := rand.New(rand.NewPCG(seed, uint64(cycle)<<8|uint64(w)))
			for seq := 0; ; seq++ {
				path := crashPaths[r.IntN(len(crashPaths))]
				m := crashWrite{ID: fmt.Sprintf("%d.%d.%d", cycle, w, seq)}
				if r.IntN(4) == 0 {
					m.Alarm = "a" + m.ID
					m.In = time.Duration(r.IntN(400)) * time.Millisecond
				}
				if r.IntN(4) == 0 {
					m.To = crashPaths[r.IntN(len(crashPaths))] // itself, a sibling, a part elsewhere
				}
				out.printf("sent\t%s\t%s\t%s", m.ID, path, m.Alarm)
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := sys.Request(rctx, path, m)
				cancel()
				if err != nil {
					out.printf("err\t%s\t%s\t%v", m.ID, path, err)
					time.Sleep(10 * time.Millisecond)
				} else {
					out.printf("ack\t%s\t%s", m.ID, path)
				}
			}
		}()
	}
	time.Sleep(2 * time.Minute) // the parent kills it long before
	out.printf("fatal\tnot killed")
	return 1
}

// crashLedger is what the parent knows of the writes: every write sent
// and every write acknowledged, in all cycles.
type crashLedger struct {
	sent  map[string]sentWrite // by id
	acked map[string]bool
	final bool // every durable message has been delivered: a missing one is lost
}

type sentWrite struct{ path, alarm string }

// crashFigures are one verification's counts; every loss is a failure.
type crashFigures struct {
	parts, files int
	hot          int // files a kill left with a rollback journal (see hotJournal)
	applied      int // rows present: acknowledged, and unacknowledged that committed
	lost         int // acknowledged writes missing
	duplicated   int // extra applications of a write
	phantom      int // rows no write sent (or sent elsewhere)
	torn         int // parts whose counter disagrees with their rows
	corrupt      int // files failing the integrity check
	alarmsSet    int // committed writes that set an alarm
	fired        int // alarms delivered (each counted once)
	firedTwice   int // extra deliveries of an alarm whose handler succeeded
	strayFired   int // deliveries of an alarm no committed write set
	pending      int // alarms set, not delivered yet, still in the part's file
	alarmsLost   int // alarms set and committed, neither delivered nor kept
	unindexed    int // alarms kept by a part but missing from the index
	forwarded    int // committed writes that sent a durable message
	received     int // durable messages handled (each counted once)
	recvTwice    int // extra handlings of a durable message
	recvStray    int // durable messages handled that no committed write sent there
	recvLost     int // durable messages of committed writes never handled (final check only)
	problems     []string
}

func (f *crashFigures) problem(format string, args ...any) {
	if len(f.problems) < 20 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

func (f crashFigures) losses() int {
	return f.lost + f.duplicated + f.phantom + f.torn + f.corrupt + f.firedTwice + f.strayFired + f.alarmsLost + f.unindexed +
		f.recvTwice + f.recvStray + f.recvLost
}

// verifyCrash reads every file under dir (no System may have it open) and
// checks it against the ledger.
func verifyCrash(t testing.TB, dir string, l *crashLedger) crashFigures {
	t.Helper()
	ctx := context.Background()
	var f crashFigures
	checked, hot, failures := checkAll(t, dir)
	f.files, f.hot, f.corrupt = checked, hot, len(failures)
	for _, fail := range failures {
		f.problem("integrity: %s", fail)
	}
	parts, _ := partFiles(t, dir)
	f.parts = len(parts)

	// The index of alarms, by "path\x00name".
	index := map[string]bool{}
	if err := readOnly(ctx, filepath.Join(dir, "_fractal_alarms.db"), func(tx *persistence.Tx) error {
		rows, err := queryStrings(tx, `SELECT path || char(0) || name FROM alarms`)
		for _, r := range rows {
			index[r] = true
		}
		return err
	}); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.problem("alarm index: %v", err)
		f.corrupt++
	}

	present := map[string]bool{}
	forwards := map[string]string{}     // id -> receiver, of committed writes
	receivedBy := map[string][]string{} // id -> receivers that handled it
	for path, file := range parts {
		var applied, alarms, fired, kept, fwds, recv, dead []string
		var n int
		read := func(tx *persistence.Tx) error {
			// A file created by an activation the kill interrupted
			// before its migrations committed is empty, at version 0.
			var version int
			if err := tx.QueryRow(`PRAGMA user_version`).Scan(&version); err != nil || version == 0 {
				return err
			}
			var err error
			if applied, err = queryStrings(tx, `SELECT id FROM applied`); err != nil {
				return err
			}
			if alarms, err = queryStrings(tx, `SELECT alarm FROM applied WHERE alarm IS NOT NULL`); err != nil {
				return err
			}
			if fired, err = queryStrings(tx, `SELECT name FROM fired`); err != nil {
				return err
			}
			if err := tx.QueryRow(`SELECT n FROM counter`).Scan(&n); err != nil {
				return err
			}
			if fwds, err = queryStrings(tx, `SELECT id || char(0) || fwd FROM applied WHERE fwd IS NOT NULL`); err != nil {
				return err
			}
			if recv, err = queryStrings(tx, `SELECT id FROM received`); err != nil {
				return err
			}
			if ok, err := hasTable(tx, "_fractal_dead"); err != nil {
				return err
			} else if ok {
				// Dead letters explain a durable message that never arrived.
				if dead, err = queryStrings(tx, `SELECT dest || ' #' || seq || ' after ' || attempts || ' attempts: ' || last_error FROM _fractal_dead`); err != nil {
					return err
				}
			}
			if ok, err := hasTable(tx, "_fractal_alarms"); err != nil || !ok {
				return err
			}
			kept, err = queryStrings(tx, `SELECT name FROM _fractal_alarms`)
			return err
		}
		err := readOnly(ctx, file, read)
		if hotJournal(file, err) {
			err = readOnly(ctx, recoveredCopy(t, file), read)
		}
		if err != nil {
			f.corrupt++
			f.problem("%s: read: %v", path, err)
			continue
		}
		for _, fw := range fwds {
			id, to, _ := strings.Cut(fw, "\x00")
			forwards[id] = to
		}
		for _, id := range recv {
			receivedBy[id] = append(receivedBy[id], path)
		}
		for _, d := range dead {
			f.problem("%s has a dead letter to %s", path, d)
		}
		seen := map[string]int{}
		for _, id := range applied {
			seen[id]++
			present[id] = true
			if s, ok := l.sent[id]; !ok || s.path != path {
				f.phantom++
				f.problem("%s holds %q, which was not sent there (sent: %+v)", path, id, s)
			}
		}
		for id, k := range seen {
			if k > 1 {
				f.duplicated += k - 1
				f.problem("%s applied %q %d times", path, id, k)
			}
		}
		f.applied += len(applied)
		if n != len(applied) {
			f.torn++
			f.problem("%s: counter %d, %d rows", path, n, len(applied))
		}
		set := map[string]bool{}
		for _, a := range alarms {
			set[a] = true
		}
		f.alarmsSet += len(alarms)
		keptSet := map[string]bool{}
		for _, k := range kept {
			keptSet[k] = true
			if !index[path+"\x00"+k] {
				f.unindexed++
				f.problem("%s keeps alarm %q, the index does not know it", path, k)
			}
		}
		firedSet := map[string]int{}
		for _, name := range fired {
			firedSet[name]++
			if !set[name] {
				f.strayFired++
				f.problem("%s: alarm %q fired, no committed write set it", path, name)
			}
		}
		for name, k := range firedSet {
			f.fired++
			if k > 1 {
				f.firedTwice += k - 1
				f.problem("%s: alarm %q fired %d times", path, name, k)
			}
		}
		for a := range set {
			switch {
			case firedSet[a] > 0:
			case keptSet[a]:
				f.pending++
			default:
				f.alarmsLost++
				f.problem("%s: alarm %q of a committed write neither fired nor kept", path, a)
			}
		}
	}
	for id := range l.acked {
		if !present[id] {
			f.lost++
			f.problem("acknowledged write %q to %s is missing", id, l.sent[id].path)
		}
	}
	f.forwarded = len(forwards)
	for id, by := range receivedBy {
		f.received++
		to, ok := forwards[id]
		for _, p := range by {
			if !ok || p != to {
				f.recvStray++
				f.problem("%s handled the durable message of %q, which no committed write sent there (sent to %q)", p, id, to)
			}
		}
		if len(by) > 1 {
			f.recvTwice += len(by) - 1
			f.problem("the durable message of %q was handled %d times", id, len(by))
		}
	}
	if l.final {
		for id, to := range forwards {
			if len(receivedBy[id]) == 0 {
				f.recvLost++
				f.problem("the durable message of committed write %q never reached %s", id, to)
			}
		}
	}
	return f
}

// cycleResult is what one cycle's child reported.
type cycleResult struct {
	ready        bool
	durability   string
	sent, acked  int
	errs         []string
	passivations uint64
	messages     uint64
}

// TestCrash kills a System with SIGKILL at random moments under a mixed
// load of writes, durable alarms and passivation, restarts it, and checks
// after every cycle that no acknowledged write is lost, none is applied
// twice, every part's counter agrees with its rows, every alarm is where
// it should be, and every file passes SQLite's integrity check. The last
// run is a clean one that lets the remaining alarms fire.
func TestCrash(t *testing.T) {
	r, seed := newRand(t)
	dir := *crashDir
	if dir == "" {
		dir = t.TempDir()
	}
	cycles := *crashCycles
	l := &crashLedger{sent: map[string]sentWrite{}, acked: map[string]bool{}}
	var (
		passivations, messages uint64
		killedEarly, errs, hot int
		durabilities           = map[string]int{}
	)
	start := time.Now()
	for cycle := range cycles {
		early := r.IntN(10) == 0 // killed while opening
		var delay time.Duration
		if early {
			delay = time.Duration(r.IntN(150)) * time.Millisecond
		} else {
			delay = time.Duration(20+r.IntN(1000)) * time.Millisecond
		}
		res := crashCycle(t, dir, cycle, seed, early, delay, l)
		if res.ready {
			durabilities[res.durability]++
		} else {
			killedEarly++
		}
		passivations += res.passivations
		messages += res.messages
		errs += len(res.errs)
		for i, e := range res.errs {
			if i < 5 {
				t.Errorf("cycle %d: a request failed before the kill: %s", cycle, e)
			}
		}
		f := verifyCrash(t, dir, l)
		hot += f.hot
		if f.losses() > 0 {
			t.Fatalf("cycle %d (durability %s, killed %v after start): %+v\n%s", cycle, res.durability, delay, f, strings.Join(f.problems, "\n"))
		}
	}
	crashTime := time.Since(start)

	// A clean run: no load, the alarms still due fire and the durable
	// messages still in outboxes are delivered.
	pendingBefore := verifyCrash(t, dir, l).pending
	drained, delivered := drainAlarms(t, dir, *crashDrain)
	l.final = delivered
	f := verifyCrash(t, dir, l)
	if f.losses() > 0 {
		t.Fatalf("after the final run: %+v\n%s", f, strings.Join(f.problems, "\n"))
	}
	if drained && f.pending > 0 {
		t.Fatalf("the alarm index emptied but %d alarms are still pending in parts", f.pending)
	}
	if !delivered {
		t.Errorf("durable messages still undelivered after the final run's %v", *crashDrain)
	}
	if f.forwarded == 0 {
		t.Errorf("no committed write sent a durable message: the workload did not exercise them")
	}
	if passivations == 0 {
		t.Errorf("no part was passivated: the workload did not exercise passivation")
	}
	if len(l.acked) == 0 {
		t.Fatal("no write was acknowledged in any cycle")
	}
	keys := make([]string, 0, len(durabilities))
	for k := range durabilities {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ds []string
	for _, k := range keys {
		ds = append(ds, fmt.Sprintf("%s:%d", k, durabilities[k]))
	}
	t.Logf("crash: cycles=%d killed_while_opening=%d durabilities=%s sent=%d acknowledged=%d applied=%d (unacknowledged but committed: %d) lost=%d duplicated=%d phantom=%d torn=%d corrupt=%d files_checked_per_cycle=%d hot_journals=%d request_errors=%d",
		cycles, killedEarly, strings.Join(ds, ","), len(l.sent), len(l.acked), f.applied, f.applied-len(l.acked), f.lost, f.duplicated, f.phantom, f.torn, f.corrupt, f.files, hot, errs)
	t.Logf("crash: durable_sent=%d handled=%d handled_twice=%d stray=%d lost=%d (all delivered in the final run: %v)",
		f.forwarded, f.received, f.recvTwice, f.recvStray, f.recvLost, delivered)
	t.Logf("crash: alarms_set=%d fired=%d fired_twice=%d stray=%d lost=%d pending_before_final_run=%d pending_after=%d (final run bounded by %v, index empty: %v) passivations=%d messages=%d seed=%d time=%v",
		f.alarmsSet, f.fired, f.firedTwice, f.strayFired, f.alarmsLost, pendingBefore, f.pending, *crashDrain, drained, passivations, messages, seed, crashTime.Round(time.Second))
}

// crashCycle runs one child on dir and kills it delay after it started
// (early) or after it reported ready, recording its writes in l.
func crashCycle(t *testing.T, dir string, cycle int, seed uint64, early bool, delay time.Duration, l *crashLedger) cycleResult {
	t.Helper()
	cmd, stderr := childCommand(t, "crash",
		"FRACTAL_CHAOS_DIR="+dir,
		"FRACTAL_CHAOS_CYCLE="+strconv.Itoa(cycle),
		"FRACTAL_CHAOS_SEED="+strconv.FormatUint(seed, 10))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(lines)
		br := bufio.NewReaderSize(stdout, 64<<10)
		for {
			s, err := br.ReadString('\n')
			if err != nil {
				// A line cut by the kill has no newline: it was never
				// written whole, so it says nothing.
				if err != io.EOF {
					t.Errorf("reading the child: %v", err)
				}
				return
			}
			lines <- strings.TrimSuffix(s, "\n")
		}
	}()

	var res cycleResult
	var kill <-chan time.Time
	if early {
		kill = time.After(delay)
	}
	timeout := time.After(90 * time.Second)
	killed := false
	for open := true; open; {
		select {
		case line, ok := <-lines:
			if !ok {
				open = false
				break
			}
			f := strings.Split(line, "\t")
			switch f[0] {
			case "ready":
				res.ready, res.durability = true, f[1]
				if !early {
					kill = time.After(delay)
				}
			case "sent":
				l.sent[f[1]] = sentWrite{path: f[2], alarm: f[3]}
				res.sent++
			case "ack":
				l.acked[f[1]] = true
				res.acked++
			case "err":
				res.errs = append(res.errs, line)
			case "stats":
				res.passivations, _ = strconv.ParseUint(f[1], 10, 64)
				res.messages, _ = strconv.ParseUint(f[2], 10, 64)
			case "fatal":
				t.Errorf("cycle %d: child: %s", cycle, line)
			}
		case <-kill:
			// What the child wrote before dying is still read, to EOF.
			kill, killed = nil, true
			cmd.Process.Kill()
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("cycle %d: child still running after 90 s", cycle)
		}
	}
	wg.Wait()
	err = cmd.Wait()
	if trouble := childTrouble(stderr.String()); trouble != "" {
		t.Fatalf("cycle %d: the child reported:\n%s", cycle, trouble)
	}
	if !killed {
		t.Fatalf("cycle %d: the child exited by itself (%v):\n%s", cycle, err, stderr.String())
	}
	return res
}

// drainAlarms runs a System on dir without load until its index of alarms
// is empty and no part has a durable message to deliver, or wait (on the
// wall clock) has passed, then closes it. It reports whether the index
// emptied (every alarm set was then delivered) and whether the outboxes
// did.
//
// The System runs on a fake clock that the loop moves a second ahead at
// every look, so that what is due later (an alarm set for later, a
// delivery's backoff, the 30 s lease of a wake lost in a crash) comes due
// after a few dozen looks, whatever the machine's load: wait only bounds a
// run that does not converge.
func drainAlarms(t *testing.T, dir string, wait time.Duration) (bool, bool) {
	t.Helper()
	ctx := context.Background()
	clk := actortest.NewClock(time.Now())
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: crashKinds(), MaxActiveParts: crashMaxActive, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	empty, delivered := false, false
	start := clk.Now()
	defer func() { t.Logf("crash: the final run's clock went %v ahead", clk.Now().Sub(start)) }()
	actortest.Poll(wait, 20*time.Millisecond, func() bool {
		defer clk.Advance(time.Second)
		var n int
		err := readOnly(ctx, filepath.Join(dir, "_fractal_alarms.db"), func(tx *persistence.Tx) error {
			return tx.QueryRow(`SELECT count(*) FROM alarms WHERE name NOT LIKE '\_fractal.%' ESCAPE '\'`).Scan(&n)
		})
		if err != nil {
			t.Fatalf("reading the alarm index: %v", err)
		}
		empty = n == 0
		if !delivered {
			left := 0
			for _, p := range crashPaths {
				k, err := sys.Undelivered(ctx, p)
				if err != nil {
					t.Fatalf("undelivered messages of %s: %v", p, err)
				}
				left += k
			}
			delivered = left == 0
		}
		return empty && delivered
	})
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := sys.Close(cctx); err != nil {
		t.Fatalf("close after the final run: %v", err)
	}
	return empty, delivered
}
