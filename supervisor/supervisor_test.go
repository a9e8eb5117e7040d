package supervisor

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{OneForOne.String(), "one_for_one"},
		{OneForAll.String(), "one_for_all"},
		{RestForOne.String(), "rest_for_one"},
		{Strategy(9).String(), "strategy(9)"},
		{Permanent.String(), "permanent"},
		{Transient.String(), "transient"},
		{Temporary.String(), "temporary"},
		{RestartType(9).String(), "restart(9)"},
		{Failure.String(), "failure"},
		{Normal.String(), "normal"},
		{Shutdown.String(), "shutdown"},
		{ExitReason(9).String(), "failure(9)"},
		{Decision{}.String(), "none"},
		{Backoff{}.String(), "none"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestZeroValues(t *testing.T) {
	var s Spec
	if s.Strategy != OneForOne {
		t.Errorf("zero Strategy is %v, want one_for_one", s.Strategy)
	}
	var rt RestartType
	if rt != Permanent {
		t.Errorf("zero RestartType is %v, want permanent", rt)
	}
	var r ExitReason
	if !r.Abnormal() || r != Failure {
		t.Errorf("zero ExitReason is %v, want an abnormal failure", r)
	}
	if Normal.Abnormal() || Shutdown.Abnormal() || !ExitReason(9).Abnormal() {
		t.Error("Abnormal misclassifies a reason")
	}
	sup, err := New(Spec{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sup.Spec(); got.Intensity != DefaultIntensity || got.Period != DefaultPeriod {
		t.Errorf("zero Spec became %v, want OTP defaults", got)
	}
}

func TestParseAndText(t *testing.T) {
	for _, s := range []Strategy{OneForOne, OneForAll, RestForOne} {
		got, err := ParseStrategy(s.String())
		if err != nil || got != s {
			t.Errorf("ParseStrategy(%q) = %v, %v", s, got, err)
		}
	}
	for _, r := range []RestartType{Permanent, Transient, Temporary} {
		got, err := ParseRestartType(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRestartType(%q) = %v, %v", r, got, err)
		}
	}
	if _, err := ParseStrategy("simple_one_for_one"); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("ParseStrategy of unknown name: %v", err)
	}
	if _, err := ParseRestartType("sometimes"); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("ParseRestartType of unknown name: %v", err)
	}

	type config struct {
		Strategy Strategy
		Restart  RestartType
	}
	b, err := json.Marshal(config{RestForOne, Transient})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Strategy":"rest_for_one","Restart":"transient"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var c config
	if err := json.Unmarshal(b, &c); err != nil || c != (config{RestForOne, Transient}) {
		t.Errorf("json round trip = %+v, %v", c, err)
	}
	if err := json.Unmarshal([]byte(`{"Strategy":"all_for_one"}`), &c); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("json with unknown strategy: %v", err)
	}
	if _, err := json.Marshal(config{Strategy: 7}); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("json of invalid strategy: %v", err)
	}
	if _, err := RestartType(7).MarshalText(); !errors.Is(err, ErrInvalidSpec) {
		t.Errorf("MarshalText of invalid restart type: %v", err)
	}
}

func TestValidateWrapsErrInvalidSpec(t *testing.T) {
	for _, s := range []Spec{
		{Strategy: 3},
		{Intensity: -1, Period: time.Second},
		{Period: -time.Second},
		{Intensity: 1},
		{Backoff: Backoff{Jitter: 0.1}},
		{Backoff: Backoff{Initial: time.Second, Max: time.Second, Multiplier: 0.9}},
		{Backoff: Backoff{Initial: time.Second, Max: time.Millisecond, Multiplier: 2}},
		{Backoff: Backoff{Initial: time.Second, Max: time.Second, Multiplier: 2, Jitter: 2}},
	} {
		err := s.Validate()
		if !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidSpec", s, err)
		}
		if sup, err2 := New(s); sup != nil || err2 == nil || err2.Error() != err.Error() {
			t.Errorf("New(%+v) = %v, %v; want nil, %v", s, sup, err2, err)
		}
	}
}

// TestDelayBounds checks that every delay lies within the documented bounds
// and never overflows, for extreme backoffs too.
func TestDelayBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	backoffs := []Backoff{
		{Initial: time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.3},
		{Initial: time.Second, Max: time.Second, Multiplier: 1},
		{Initial: time.Hour, Max: math.MaxInt64, Multiplier: 1e9, Jitter: 1},
		{Initial: 1, Max: math.MaxInt64, Multiplier: math.MaxFloat64, Jitter: 0.5},
		{Initial: time.Duration(math.MaxInt64), Max: math.MaxInt64, Multiplier: 1, Jitter: 1},
	}
	for _, b := range backoffs {
		if err := b.Validate(); err != nil {
			t.Fatal(err)
		}
		for range 2000 {
			n := 1 + rng.IntN(2000)
			rnd := rng.Float64()
			got := b.Delay(n, rnd)
			base := math.Min(float64(b.Max), float64(b.Initial)*math.Pow(b.Multiplier, float64(n-1)))
			lo := math.Floor(base * (1 - b.Jitter))
			hi := math.Min(math.Ceil(base*(1+b.Jitter)), math.MaxInt64)
			if got < 0 || float64(got) < lo || float64(got) > hi {
				t.Fatalf("%v: Delay(%d, %v) = %v, want in [%v, %v]", b, n, rnd, got, time.Duration(lo), time.Duration(hi))
			}
		}
	}
}

func TestIntensityExtremes(t *testing.T) {
	sup, err := New(Spec{Intensity: math.MaxInt, Period: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Add("a", Permanent); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		d, err := sup.Exit(time.Unix(int64(i), 0), "a", Failure, 0.5)
		if err != nil || d.Escalate || !slices.Equal(d.Restart, []string{"a"}) {
			t.Fatalf("exit %d: %v, %v", i, d, err)
		}
	}
	if got := sup.Restarts(time.Unix(99, 0)); got != 100 {
		t.Errorf("Restarts = %d, want 100", got)
	}
}

func TestChildrenIsACopy(t *testing.T) {
	sup, _ := New(Spec{})
	_ = sup.Add("a", Permanent)
	_ = sup.Add("b", Temporary)
	c := sup.Children()
	c[0].ID = "zzz"
	if got := sup.Children(); got[0].ID != "a" || sup.Len() != 2 {
		t.Errorf("Children = %v after changing a copy", got)
	}
}

// TestRandomInvariants drives supervisors with random events and checks the
// documented shape of every Decision against the children before the exit.
func TestRandomInvariants(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 99))
		spec := Spec{
			Strategy:  Strategy(rng.IntN(3)),
			Intensity: rng.IntN(5),
			Period:    time.Duration(1+rng.IntN(10)) * time.Second,
		}
		if rng.IntN(2) == 0 {
			spec.Backoff = Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: rng.Float64()}
		}
		sup, err := New(spec)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Unix(1_700_000_000, 0)
		next := 0
		for step := range 2000 {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			before := sup.Children()
			switch op := rng.IntN(10); {
			case op < 3 || len(before) == 0:
				next++
				if err := sup.Add("c"+strconv.Itoa(next), RestartType(rng.IntN(3))); err != nil {
					t.Fatal(err)
				}
			case op < 4:
				if err := sup.Remove(before[rng.IntN(len(before))].ID); err != nil {
					t.Fatal(err)
				}
			default:
				i := rng.IntN(len(before))
				reason := ExitReason(rng.IntN(3))
				rnd := rng.Float64()
				d, err := sup.Exit(now, before[i].ID, reason, rnd)
				if err != nil {
					t.Fatal(err)
				}
				checkDecision(t, spec, before, i, reason, d, sup.Children())
				if d.Delay < 0 || d.Delay > spec.Backoff.Delay(spec.Intensity, 1) {
					t.Fatalf("seed %d step %d: delay %v out of range", seed, step, d.Delay)
				}
			}
			if err := sup.checkInvariants(); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
		}
	}
}

func checkDecision(t *testing.T, spec Spec, before []Child, i int, reason ExitReason, d Decision, after []Child) {
	t.Helper()
	exited := before[i]
	ids := func(cs []Child) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	reversed := func(s []string) []string {
		s = slices.Clone(s)
		slices.Reverse(s)
		return s
	}
	restart := exited.Restart == Permanent || exited.Restart == Transient && reason.Abnormal()
	switch {
	case !restart:
		if d.String() != "remove "+exited.ID {
			t.Fatalf("%v exit of %v: got %v, want a removal", reason, exited, d)
		}
		if want := ids(slices.Delete(slices.Clone(before), i, i+1)); !slices.Equal(ids(after), want) {
			t.Fatalf("children after removal %v, want %v", ids(after), want)
		}
	case d.Escalate:
		others := ids(slices.Delete(slices.Clone(before), i, i+1))
		if !slices.Equal(d.Stop, reversed(others)) || d.Restart != nil || d.Remove != nil || d.Delay != 0 {
			t.Fatalf("escalation %v, want stop of %v", d, reversed(others))
		}
		if len(after) != 0 {
			t.Fatalf("children after escalation: %v", after)
		}
	default:
		var group []Child
		switch spec.Strategy {
		case OneForOne:
			group = before[i : i+1]
		case OneForAll:
			group = before
		case RestForOne:
			group = before[i:]
		}
		var stop, restarted, removed []string
		for _, c := range group {
			if c.ID != exited.ID {
				stop = append(stop, c.ID)
			}
			if c.Restart == Temporary {
				removed = append(removed, c.ID)
			} else {
				restarted = append(restarted, c.ID)
			}
		}
		if !slices.Equal(d.Stop, reversed(stop)) || !slices.Equal(d.Restart, restarted) || !slices.Equal(d.Remove, removed) {
			t.Fatalf("%v: exit of %v in %v: got %v", spec.Strategy, exited, ids(before), d)
		}
		var kept []string
		for _, c := range before {
			if !slices.Contains(removed, c.ID) {
				kept = append(kept, c.ID)
			}
		}
		if !slices.Equal(ids(after), kept) {
			t.Fatalf("children after restart %v, want %v", ids(after), kept)
		}
	}
}

func BenchmarkExitOneForOne(b *testing.B) {
	sup, _ := New(Spec{Intensity: 10, Period: time.Second})
	for i := range 100_000 {
		_ = sup.Add("c"+strconv.Itoa(i), Permanent)
	}
	now := time.Unix(0, 0)
	for i := 0; b.Loop(); i++ {
		now = now.Add(time.Second)
		if _, err := sup.Exit(now, "c50000", Failure, 0.5); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddRemove(b *testing.B) {
	sup, _ := New(Spec{})
	for i := range 100_000 {
		_ = sup.Add("c"+strconv.Itoa(i), Transient)
	}
	for b.Loop() {
		_ = sup.Remove("c50000")
		_ = sup.Add("c50000", Transient)
	}
}
