package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// Messages of the alarm kind.
type (
	setAlarm struct {
		name string
		in   time.Duration
	}
	setThenFail struct {
		name string
		in   time.Duration
	}
	cancelAlarm struct{ name string }
)

var alarmMigrations = append(counterMigrations[:2:2], persistence.Migration{
	Name: "alarm log", SQL: `CREATE TABLE fired (name TEXT NOT NULL, attempt INTEGER NOT NULL)`,
})

// alarmKinds: leaves that set alarms and count them; an alarm whose name
// starts with "fail" fails its first two deliveries.
func alarmKinds(idle time.Duration) []actors.Kind {
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case setAlarm:
			return nil, c.SetAlarm(m.name, c.Now().Add(m.in))
		case setThenFail:
			if err := c.SetAlarm(m.name, c.Now().Add(m.in)); err != nil {
				return nil, err
			}
			return nil, errTest
		case cancelAlarm:
			return nil, c.CancelAlarm(m.name)
		case actors.Alarm:
			if _, err := c.Exec(`INSERT INTO fired (name, attempt) VALUES (?, ?)`, m.Name, m.Attempt); err != nil {
				return nil, err
			}
			if len(m.Name) >= 4 && m.Name[:4] == "fail" && m.Attempt < 2 {
				return nil, errTest // rolled back: the row above is not kept
			}
			return nil, nil
		}
		return counterHandler(c, msg)
	})
	return []actors.Kind{
		{Name: "top", Pattern: "al", Handler: h, Migrations: alarmMigrations, IdleTimeout: -1},
		{Name: "leaf", Pattern: "al/*", Handler: h, Migrations: alarmMigrations, IdleTimeout: idle},
	}
}

// fired returns the deliveries recorded by al/a, as "name@attempt".
func fired(t *testing.T, h *actortest.Harness, path string) string {
	t.Helper()
	var out []string
	for _, r := range h.Query(path, `SELECT name, attempt FROM fired ORDER BY rowid`) {
		out = append(out, fmt.Sprintf("%s@%d", r[0], r[1]))
	}
	return fmt.Sprint(out)
}

// indexEntries counts the alarm index's entries.
func indexEntries(t *testing.T, h *actortest.Harness) int64 {
	t.Helper()
	db, err := persistence.Open(context.Background(), filepath.Join(h.Dir(), "_fractal_alarms.db"), &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.View(context.Background(), func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT count(*) FROM alarms`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// alarmsLeft counts the alarms set in the file of the part at path.
func alarmsLeft(t *testing.T, h *actortest.Harness, path string) int64 {
	t.Helper()
	return h.QueryInt(path, `SELECT count(*) FROM _fractal_alarms`)
}

func TestAlarmFiresOnceAndIsCleared(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	h.MustRequest("al/a", setAlarm{"ping", 30 * time.Millisecond})
	clk.WaitTimer(t, 30*time.Millisecond) // the alarm waker, for ping
	clk.Advance(30*time.Millisecond - time.Nanosecond)
	if got := fired(t, h, "al/a"); got != "[]" {
		t.Fatalf("deliveries %s before the alarm was due", got)
	}
	clk.Advance(time.Nanosecond)
	actortest.Eventually(t, func() bool { return fired(t, h, "al/a") == "[ping@0]" })
	actortest.Eventually(t, func() bool { return indexEntries(t, h) == 0 })
	// Nothing is left to fire, in the part or the index, past the lease
	// of a wake.
	if n := alarmsLeft(t, h, "al/a"); n != 0 {
		t.Fatalf("%d alarms left in al/a after the delivery", n)
	}
	clk.Advance(time.Minute)
	if got := fired(t, h, "al/a"); got != "[ping@0]" {
		t.Fatalf("deliveries %s, want one", got)
	}
}

// An alarm wakes its part from passivation, and survives a restart of the
// whole system.
func TestAlarmSurvivesPassivationAndRestart(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: alarmKinds(10 * time.Millisecond), Clock: clk})
	h.MustRequest("al/a", setAlarm{"later", 250 * time.Millisecond})
	h.MustRequest("al/b", setAlarm{"sleepy", 150 * time.Millisecond})
	clk.WaitTimer(t, 10*time.Millisecond) // the passivator's first tick
	clk.Advance(10 * time.Millisecond)
	actortest.Eventually(t, func() bool { return !h.System().Active("al/b") })
	if got := fired(t, h, "al/b"); got != "[]" {
		t.Fatalf("al/b delivered %s before its alarm was due", got)
	}
	h.Reopen()
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool {
		return fired(t, h, "al/a") == "[later@0]" && fired(t, h, "al/b") == "[sleepy@0]"
	})
}

// A failing delivery is retried with backoff until it succeeds.
func TestAlarmRetriedUntilItSucceeds(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	h.MustRequest("al/a", setAlarm{"fail-twice", time.Millisecond})
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return fired(t, h, "al/a") == "[fail-twice@2]" })
	actortest.Eventually(t, func() bool { return indexEntries(t, h) == 0 })
}

// Cancelled, rolled back or moved later: no delivery, and the index cleans
// itself up.
func TestAlarmCancelRollbackReschedule(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	// The clock stands still between these requests, however slow the
	// machine: a cancel never arrives after its alarm was due.
	const soon = 100 * time.Millisecond
	h.MustRequest("al/a", setAlarm{"cancelled", soon})
	h.MustRequest("al/a", cancelAlarm{"cancelled"})
	if _, err := h.Request("al/a", setThenFail{"rolledback", soon}); !errors.Is(err, errTest) {
		t.Fatal(err)
	}
	h.MustRequest("al/a", setAlarm{"moved", soon})
	h.MustRequest("al/a", setAlarm{"moved", time.Hour})
	h.MustRequest("al/a", setAlarm{"sooner", time.Hour})
	h.MustRequest("al/a", setAlarm{"sooner", 60 * time.Millisecond})
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return fired(t, h, "al/a") == "[sooner@0]" })
	// Past soon, stale entries are woken, find nothing due and are
	// settled: only "moved" remains, an hour away.
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return indexEntries(t, h) == 1 })
	if got := fired(t, h, "al/a"); got != "[sooner@0]" {
		t.Fatalf("deliveries %s", got)
	}
}

// An index that lost its entries (deleted, or the part's file restored from
// a backup) heals when the part is next activated.
func TestAlarmIndexHealsOnActivation(t *testing.T) {
	dir := t.TempDir()
	clk := actortest.NewClock(time.Time{})
	h := actortest.Open(t, dir, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	h.MustRequest("al/a", setAlarm{"kept", 300 * time.Millisecond})
	h.Close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "_fractal_alarms.db"+suffix))
	}
	h2 := actortest.Open(t, dir, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	h2.MustRequest("al/a", get{}) // activation registers the alarm again
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return fired(t, h2, "al/a") == "[kept@0]" })
}

func TestAlarmMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: alarmKinds(-1), Registerer: reg, Clock: clk})
	h.MustRequest("al/a", setAlarm{"fail-once-then-twice", time.Millisecond})
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return fired(t, h, "al/a") == "[fail-once-then-twice@2]" })
	actortest.Eventually(t, func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			switch mf.GetName() {
			case "fractal_alarm_deliveries_total":
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "outcome" {
							got[l.GetValue()] = m.GetCounter().GetValue()
						}
					}
				}
			case "fractal_alarm_lateness_seconds":
				got["lateness"] = float64(mf.GetMetric()[0].GetHistogram().GetSampleCount())
			}
		}
		return got["ok"] == 1 && got["error"] == 2 && got["lateness"] == 3
	})
}

// elsewhere serves one path on another node, as a cluster does for a
// subtree that moved; every message it receives is encoded as for the
// wire.
type elsewhere struct {
	path string
	mu   sync.Mutex
	got  []string
}

func (e *elsewhere) Local(p actors.Path) bool { return p.String() != e.path }

func (e *elsewhere) Request(ctx context.Context, p actors.Path, msg any) (any, error) {
	name, data, err := actors.EncodeMessage(msg)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	e.got = append(e.got, name+" "+string(data))
	e.mu.Unlock()
	return nil, nil
}

// An alarm of a part that now lives on another node is woken there, and
// this node's index forgets it once the wake arrived (the other node's
// index learns the part's alarms when the wake activates it).
func TestAlarmOfAMovedPartWakesItsNewNode(t *testing.T) {
	dir := t.TempDir()
	clk := actortest.NewClock(time.Time{})
	h := actortest.Open(t, dir, actors.Options{Kinds: alarmKinds(-1), Clock: clk})
	h.MustRequest("al/a", setAlarm{"later", 300 * time.Millisecond})
	h.Close()
	far := &elsewhere{path: "al/a"}
	h = actortest.Open(t, dir, actors.Options{Kinds: alarmKinds(-1), Remote: far, Clock: clk})
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return indexEntries(t, h) == 0 })
	far.mu.Lock()
	defer far.mu.Unlock()
	if len(far.got) != 1 || far.got[0] != `fractal.wake {"Name":"later"}` {
		t.Fatalf("the other node received %q", far.got)
	}
}
