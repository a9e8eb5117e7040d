package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The scenario scripts in testdata/*.txt are line oriented:
//
//	# comment (whole line)
//	spec <strategy> [intensity=N] [period=D] [initial=D] [max=D] [multiplier=F] [jitter=F] [-> <Spec.String> | -> error <message>]
//	add <id> <restart type> [-> error <message>]
//	remove <id> [-> error <message>]
//	exit t=<D> <id> <reason> [rnd=F] -> <Decision.String> | error <message>
//	children -> <id>:<restart type> ... | none
//	restarts t=<D> -> <N>
//	delay n=<N> [rnd=F] -> <duration>
//
// t=<D> is a Go duration since a fixed epoch; rnd defaults to 0.5 (no
// jitter offset). A numeric strategy, restart type or reason stands for
// that raw value, to exercise invalid input; "" is the empty id. A spec
// line starts a fresh Supervisor; commands without "->" must succeed.
//
// After every command the harness also checks the Supervisor's internal
// invariants, including the bound on the restart history.

var scriptEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenario scripts in testdata")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

type scriptRunner struct {
	t    *testing.T
	pos  string // file:line of the current command
	sup  *Supervisor
	cmds int
}

func runScript(t *testing.T, file string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &scriptRunner{t: t}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		r.pos = fmt.Sprintf("%s:%d", file, line)
		cmd, want, hasWant := strings.Cut(text, "->")
		r.run(strings.Fields(cmd), strings.Join(strings.Fields(want), " "), hasWant)
		if r.sup != nil {
			if err := r.sup.checkInvariants(); err != nil {
				t.Fatalf("%s: invariant broken after %q: %v", r.pos, text, err)
			}
		}
		r.cmds++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if r.cmds == 0 {
		t.Fatalf("%s: no commands", file)
	}
}

func (r *scriptRunner) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("%s: "+format, append([]any{r.pos}, args...)...)
}

func (r *scriptRunner) run(fields []string, want string, hasWant bool) {
	r.t.Helper()
	if len(fields) == 0 {
		r.fatalf("missing command")
	}
	name := fields[0]
	pos, kv := splitArgs(fields[1:])
	if name != "spec" && r.sup == nil {
		r.fatalf("%s before a successful spec", name)
	}
	switch name {
	case "spec":
		r.needArgs(name, pos, 1)
		spec := Spec{Strategy: r.strategy(pos[0])}
		for k, v := range kv {
			switch k {
			case "intensity":
				spec.Intensity = r.int(v)
			case "period":
				spec.Period = r.duration(v)
			case "initial":
				spec.Backoff.Initial = r.duration(v)
			case "max":
				spec.Backoff.Max = r.duration(v)
			case "multiplier":
				spec.Backoff.Multiplier = r.float(v)
			case "jitter":
				spec.Backoff.Jitter = r.float(v)
			default:
				r.fatalf("unknown spec key %q", k)
			}
		}
		sup, err := New(spec)
		r.sup = sup
		if r.checkErr(err, want, hasWant, ErrInvalidSpec) || !hasWant {
			return
		}
		if got := sup.Spec().String(); got != want {
			r.t.Errorf("%s: spec\n got: %s\nwant: %s", r.pos, got, want)
		}
	case "add":
		r.needArgs(name, pos, 2)
		r.noKeys(name, kv)
		err := r.sup.Add(id(pos[0]), r.restartType(pos[1]))
		r.checkErr(err, want, hasWant, ErrInvalidChild, ErrDuplicateChild)
	case "remove":
		r.needArgs(name, pos, 1)
		r.noKeys(name, kv)
		err := r.sup.Remove(id(pos[0]))
		r.checkErr(err, want, hasWant, ErrUnknownChild)
	case "exit":
		r.needArgs(name, pos, 2)
		if !hasWant {
			r.fatalf("exit needs an expected decision")
		}
		now := r.time(kv)
		rnd := 0.5
		for k, v := range kv {
			switch k {
			case "t":
			case "rnd":
				rnd = r.float(v)
			default:
				r.fatalf("unknown exit key %q", k)
			}
		}
		got, err := r.sup.Exit(now, id(pos[0]), r.reason(pos[1]), rnd)
		if r.checkErr(err, want, hasWant, ErrUnknownChild) {
			return
		}
		wantD := r.decision(want)
		if !reflect.DeepEqual(got, wantD) || got.String() != want {
			r.t.Errorf("%s: exit %s %s\n got: %s\nwant: %s", r.pos, pos[0], pos[1], got, want)
		}
	case "children":
		r.needArgs(name, pos, 0)
		r.noKeys(name, kv)
		var parts []string
		for _, c := range r.sup.Children() {
			parts = append(parts, c.ID+":"+c.Restart.String())
		}
		got := strings.Join(parts, " ")
		if got == "" {
			got = "none"
		}
		if !hasWant || got != want {
			r.t.Errorf("%s: children\n got: %s\nwant: %s", r.pos, got, want)
		}
	case "restarts":
		r.needArgs(name, pos, 0)
		got := strconv.Itoa(r.sup.Restarts(r.time(kv)))
		if !hasWant || got != want {
			r.t.Errorf("%s: restarts\n got: %s\nwant: %s", r.pos, got, want)
		}
	case "delay":
		r.needArgs(name, pos, 0)
		n, ok := kv["n"]
		if !ok {
			r.fatalf("delay needs n=")
		}
		rnd := 0.5
		if v, ok := kv["rnd"]; ok {
			rnd = r.float(v)
		}
		got := r.sup.Spec().Backoff.Delay(r.int(n), rnd).String()
		if !hasWant || got != want {
			r.t.Errorf("%s: delay\n got: %s\nwant: %s", r.pos, got, want)
		}
	default:
		r.fatalf("unknown command %q", name)
	}
}

// checkErr compares err with an expected "error <message>" result and
// checks that err wraps one of the sentinels. It reports whether an error
// was expected (in which case the caller has nothing more to compare).
func (r *scriptRunner) checkErr(err error, want string, hasWant bool, sentinels ...error) bool {
	r.t.Helper()
	msg, wantErr := strings.CutPrefix(want, "error ")
	if !hasWant || !wantErr {
		if err != nil {
			r.fatalf("unexpected error: %v", err)
		}
		return false
	}
	if err == nil {
		r.t.Errorf("%s: got no error, want %q", r.pos, msg)
		return true
	}
	if err.Error() != msg {
		r.t.Errorf("%s: error\n got: %v\nwant: %s", r.pos, err, msg)
	}
	wraps := false
	for _, s := range sentinels {
		wraps = wraps || errors.Is(err, s)
	}
	if !wraps {
		r.t.Errorf("%s: error %v wraps none of %v", r.pos, err, sentinels)
	}
	return true
}

func (r *scriptRunner) decision(text string) Decision {
	r.t.Helper()
	var d Decision
	f := strings.Fields(text)
	list := func(i int) []string {
		if i+1 >= len(f) {
			r.fatalf("%q needs a list", f[i])
		}
		return strings.Split(f[i+1], ",")
	}
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case "none":
		case "escalate":
			d.Escalate = true
		case "stop":
			d.Stop = list(i)
			i++
		case "restart":
			d.Restart = list(i)
			i++
		case "remove":
			d.Remove = list(i)
			i++
		case "delay":
			if i+1 >= len(f) {
				r.fatalf("delay needs a duration")
			}
			d.Delay = r.duration(f[i+1])
			i++
		default:
			r.fatalf("bad decision word %q in %q", f[i], text)
		}
	}
	return d
}

func splitArgs(args []string) (pos []string, kv map[string]string) {
	kv = make(map[string]string)
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, a)
		}
	}
	return pos, kv
}

func id(s string) string {
	if s == `""` {
		return ""
	}
	return s
}

func (r *scriptRunner) needArgs(cmd string, pos []string, n int) {
	r.t.Helper()
	if len(pos) != n {
		r.fatalf("%s takes %d positional arguments, got %q", cmd, n, pos)
	}
}

func (r *scriptRunner) noKeys(cmd string, kv map[string]string) {
	r.t.Helper()
	if len(kv) != 0 {
		r.fatalf("%s takes no key=value arguments", cmd)
	}
}

func (r *scriptRunner) time(kv map[string]string) time.Time {
	r.t.Helper()
	v, ok := kv["t"]
	if !ok {
		r.fatalf("missing t=")
	}
	return scriptEpoch.Add(r.duration(v))
}

func (r *scriptRunner) strategy(s string) Strategy {
	r.t.Helper()
	if v, err := ParseStrategy(s); err == nil {
		return v
	}
	return Strategy(r.uint8(s))
}

func (r *scriptRunner) restartType(s string) RestartType {
	r.t.Helper()
	if v, err := ParseRestartType(s); err == nil {
		return v
	}
	return RestartType(r.uint8(s))
}

func (r *scriptRunner) reason(s string) ExitReason {
	r.t.Helper()
	for _, v := range []ExitReason{Failure, Normal, Shutdown} {
		if v.String() == s {
			return v
		}
	}
	return ExitReason(r.uint8(s))
}

func (r *scriptRunner) uint8(s string) uint8 {
	r.t.Helper()
	v, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		r.fatalf("bad name or number %q", s)
	}
	return uint8(v)
}

func (r *scriptRunner) int(s string) int {
	r.t.Helper()
	v, err := strconv.Atoi(s)
	if err != nil {
		r.fatalf("bad integer %q", s)
	}
	return v
}

func (r *scriptRunner) float(s string) float64 {
	r.t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		r.fatalf("bad number %q", s)
	}
	return v
}

func (r *scriptRunner) duration(s string) time.Duration {
	r.t.Helper()
	v, err := time.ParseDuration(s)
	if err != nil {
		r.fatalf("bad duration %q", s)
	}
	return v
}

// checkInvariants verifies the internal consistency of s: the start order
// list and the index agree, and the restart history respects its bound.
func (s *Supervisor) checkInvariants() error {
	n := 0
	var prev *node
	for m := s.head; m != nil; m = m.next {
		if m.prev != prev {
			return fmt.Errorf("child %q: broken prev link", m.ID)
		}
		if s.byID[m.ID] != m {
			return fmt.Errorf("child %q: index does not point at it", m.ID)
		}
		prev = m
		n++
	}
	if s.tail != prev {
		return errors.New("tail is not the last child")
	}
	if n != len(s.byID) {
		return fmt.Errorf("%d children listed, %d indexed", n, len(s.byID))
	}
	if len(s.history) > s.spec.Intensity+1 {
		return fmt.Errorf("history holds %d entries, bound is %d", len(s.history), s.spec.Intensity+1)
	}
	return nil
}
