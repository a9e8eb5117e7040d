package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// Messages of the durable tests.
type (
	dAdd  struct{ N int } // durable: add N to the counter, log N
	dSend struct {
		To string
		N  []int
	} // send dAdd{n} durably to To for each n
	dCall struct {
		To string
		N  int
	} // Call To with dAdd{N}
)

func init() {
	actors.MustRegisterMessage[dAdd]("test.dAdd")
	actors.MustRegisterMessage[int]("test.int")
}

var durableMigrations = []persistence.Migration{{Name: "durable", SQL: `
	CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0);
	CREATE TABLE log (i INTEGER PRIMARY KEY, n INTEGER NOT NULL);
	CREATE TABLE replies (id INTEGER NOT NULL, sender TEXT NOT NULL, value INTEGER, err TEXT NOT NULL)`}}

// downParts makes the handlers of the paths in it fail every dAdd, and
// the dAdd of each N in once fail once.
type downParts struct{ m, once sync.Map }

func (d *downParts) set(path string, down bool) {
	if down {
		d.m.Store(path, true)
	} else {
		d.m.Delete(path)
	}
}

var errDown = errors.New("test: receiver down")

func durableHandler(down *downParts, attempts *atomic.Int64) actors.HandlerFunc {
	return func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case dAdd:
			attempts.Add(1)
			if _, ok := down.m.Load(c.Path().String()); ok {
				return nil, errDown
			}
			if _, ok := down.once.LoadAndDelete(m.N); ok {
				return nil, errDown
			}
			var n int
			if err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, m.N).Scan(&n); err != nil {
				return nil, err
			}
			_, err := c.Exec(`INSERT INTO log (n) VALUES (?)`, m.N)
			return n, err
		case dSend:
			for _, n := range m.N {
				if err := c.SendDurable(m.To, dAdd{n}); err != nil {
					return nil, err
				}
			}
			return nil, nil
		case dCall:
			return c.Call(m.To, dAdd{m.N})
		case actors.Reply:
			v, _ := m.Value.(int)
			_, err := c.Exec(`INSERT INTO replies (id, sender, value, err) VALUES (?, ?, ?, ?)`, m.ID, m.From, v, m.Error)
			return nil, err
		}
		return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
	}
}

// fastDelivery retries every few milliseconds.
var fastDelivery = actors.Delivery{
	Backoff: supervisor.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2},
}

func durableHarness(t *testing.T, opts actors.Options) (*actortest.Harness, *downParts, *atomic.Int64) {
	t.Helper()
	down, attempts := &downParts{}, &atomic.Int64{}
	h := actors.HandlerFunc(durableHandler(down, attempts))
	opts.Kinds = []actors.Kind{
		{Name: "bank", Pattern: "d", Migrations: durableMigrations, Handler: h},
		{Name: "account", Pattern: "d/*", Migrations: durableMigrations, Handler: h},
	}
	if opts.Delivery == (actors.Delivery{}) {
		opts.Delivery = fastDelivery
	}
	return actortest.New(t, opts), down, attempts
}

func outboxLen(h *actortest.Harness, path string) int64 {
	return h.QueryInt(path, `SELECT count(*) FROM _fractal_outbox`)
}

func TestSendDurableDeliversOnceInOrder(t *testing.T) {
	h, _, _ := durableHarness(t, actors.Options{})
	var ns []int
	for i := 1; i <= 50; i++ {
		ns = append(ns, i)
	}
	h.MustRequest("d/a", dSend{To: "../b", N: ns[:25]})
	h.MustRequest("d/a", dSend{To: "d/b", N: ns[25:]})
	// Once d/a has them all acknowledged, d/b has handled them all (and
	// has a file to query).
	h.WaitDelivered("d/a")
	rows := h.Query("d/b", `SELECT n FROM log ORDER BY i`)
	if len(rows) != 50 {
		t.Fatalf("d/b handled %d messages, want 50", len(rows))
	}
	for i, r := range rows {
		if r[0].(int64) != int64(i+1) {
			t.Fatalf("message %d handled as #%d: order not kept", r[0], i+1)
		}
	}
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 50*51/2 {
		t.Fatalf("counter %d, want %d", n, 50*51/2)
	}
}

// Messages waiting in a lane travel together; one that fails in the middle
// stops the delivery there: those before it are handled once, it and those
// after it are sent again, in order.
func TestSendDurableBundleFailsInTheMiddle(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, down, attempts := durableHarness(t, actors.Options{Registerer: reg})
	down.once.Store(7, true)
	var ns []int
	for i := 1; i <= 40; i++ {
		ns = append(ns, i)
	}
	h.MustRequest("d/a", dSend{To: "d/b", N: ns})
	h.WaitDelivered("d/a")
	rows := h.Query("d/b", `SELECT n FROM log ORDER BY i`)
	if len(rows) != 40 {
		t.Fatalf("%d messages handled, want 40", len(rows))
	}
	for i, r := range rows {
		if r[0].(int64) != int64(i+1) {
			t.Fatalf("message %d handled as #%d: order not kept", r[0], i+1)
		}
	}
	if got := attempts.Load(); got != 41 {
		t.Fatalf("handler ran %d times, want 41 (40 messages, one of them twice)", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	deliveries := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "fractal_durable_deliveries_total" {
			for _, m := range mf.GetMetric() {
				deliveries += m.GetCounter().GetValue()
			}
		}
	}
	if deliveries < 3 || deliveries > 10 {
		t.Fatalf("%v delivery attempts for 40 messages in one lane: want a few bundles", deliveries)
	}
}

func TestSendDurableRolledBackSendsNothing(t *testing.T) {
	h, _, attempts := durableHarness(t, actors.Options{})
	// dSend to a path without a kind fails after the first message was
	// stored: the handler's error rolls the stored one back too.
	if _, err := h.Request("d/a", dSend{To: "d/b/c", N: []int{1}}); !errors.Is(err, actors.ErrNoKind) {
		t.Fatalf("send to an undeclared path: %v", err)
	}
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{7}})
	h.WaitDelivered("d/a")
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 7 || attempts.Load() != 1 {
		t.Fatalf("counter %d after %d attempts, want 7 after 1", n, attempts.Load())
	}
}

// A receiver that fails for longer than several retry intervals gets the
// message once when it comes back, and nothing is lost meanwhile.
func TestSendDurableRetriesUntilReceiverReturns(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h, down, attempts := durableHarness(t, actors.Options{Clock: clk})
	down.set("d/b", true)
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{1, 2, 3}})
	// Backoff 5 ms doubling to 20 ms: ten tries take a few dozen retry
	// intervals of the fake clock.
	clk.AdvanceUntil(t, 5*time.Millisecond, func() bool { return attempts.Load() >= 10 })
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 0 {
		t.Fatalf("a failing receiver's counter moved to %d", n)
	}
	if n := outboxLen(h, "d/a"); n != 3 {
		t.Fatalf("outbox holds %d messages while the receiver is down, want 3", n)
	}
	tried := attempts.Load()
	down.set("d/b", false)
	clk.AdvanceUntil(t, 5*time.Millisecond, func() bool { return outboxLen(h, "d/a") == 0 })
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 6 {
		t.Fatalf("counter %d after the receiver returned, want 6 (each message once)", n)
	}
	if got := h.QueryInt("d/b", `SELECT count(*) FROM log`); got != 3 {
		t.Fatalf("%d messages handled, want 3", got)
	}
	t.Logf("%d failed attempts while down, then delivered", tried)
}

// A lost acknowledgement (the receiver committed, its reply never reached
// the sender) makes the sender deliver again; the receiver's inbox
// acknowledges the redelivery without handling it twice.
func TestSendDurableRedeliveryHandledOnce(t *testing.T) {
	var calls atomic.Int64
	fence := func(p actors.Path) error {
		// d/b's first batch: allowed to commit (call 1), its release
		// refused (call 2): the sender sees an error.
		if p.String() == "d/b" && calls.Add(1) == 2 {
			return errors.New("reply lost")
		}
		return nil
	}
	h, _, attempts := durableHarness(t, actors.Options{Fence: fence})
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{5}})
	h.WaitDelivered("d/a")
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 5 {
		t.Fatalf("counter %d, want 5: the redelivery was handled again", n)
	}
	if attempts.Load() != 1 || calls.Load() < 3 {
		t.Fatalf("handler ran %d times over %d fence checks; want once, and a redelivery", attempts.Load(), calls.Load())
	}
}

// When the sender's batch that records an acknowledgement fails (its
// commit: here the fence, in production a full disk), the lane is pumped
// again after the delivery backoff, not after the alarm index's 30 s lease;
// the redelivery is acknowledged without being handled again.
func TestSendDurableSettleFailureRetriedSoon(t *testing.T) {
	var attempts *atomic.Int64
	var refused atomic.Int64
	fence := func(p actors.Path) error {
		// d/a's first check after d/b handled the message: the batch
		// that records d/b's acknowledgement.
		if p.String() == "d/a" && attempts.Load() > 0 && refused.CompareAndSwap(0, 1) {
			return errors.New("commit refused")
		}
		return nil
	}
	clk := actortest.NewClock(time.Time{})
	h, _, att := durableHarness(t, actors.Options{Fence: fence, Clock: clk})
	attempts = att
	start := clk.Now()
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{7}})
	clk.AdvanceUntil(t, 5*time.Millisecond, func() bool { return outboxLen(h, "d/a") == 0 })
	took := clk.Now().Sub(start)
	if refused.Load() != 1 {
		t.Fatal("the fence never refused d/a's commit: the test did not exercise a failed settle")
	}
	if took >= 30*time.Second {
		t.Fatalf("the outbox emptied after %v: the lane waited for the alarm index's lease", took)
	}
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 7 || attempts.Load() != 1 {
		t.Fatalf("counter %d after %d handler runs; want 7 and one run", n, attempts.Load())
	}
	t.Logf("delivered and settled in %v of the fake clock", took)
}

func TestCallReplies(t *testing.T) {
	h, down, _ := durableHarness(t, actors.Options{})
	id := h.MustRequest("d/a", dCall{To: "d/b", N: 4}).(int64)
	actortest.Eventually(t, func() bool { return h.QueryInt("d/a", `SELECT count(*) FROM replies`) == 1 })
	row := h.Query("d/a", `SELECT id, sender, value, err FROM replies`)[0]
	if row[0].(int64) != id || row[1].(string) != "d/b" || row[2].(int64) != 4 || row[3].(string) != "" {
		t.Fatalf("reply %v, want id %d from d/b with value 4", row, id)
	}
	// A handler error is an answer: delivered once, not retried.
	down.set("d/c", true)
	id = h.MustRequest("d/a", dCall{To: "d/c", N: 1}).(int64)
	actortest.Eventually(t, func() bool { return h.QueryInt("d/a", `SELECT count(*) FROM replies`) == 2 })
	row = h.Query("d/a", `SELECT id, value, err FROM replies WHERE id = ?`, id)[0]
	if row[2].(string) != errDown.Error() {
		t.Fatalf("error reply %v, want %q", row, errDown)
	}
	h.WaitDelivered("d/a", "d/c")
	if n := h.QueryInt("d/c", `SELECT n FROM counter`); n != 0 {
		t.Fatalf("the failed call's writes were kept: counter %d", n)
	}
}

// A message that always fails reaches the dead-letter table after the
// configured attempts; the messages behind it in its lane go on; redriven
// once the receiver is fixed, it is handled once.
func TestDeadLetterAndRedrive(t *testing.T) {
	delivery := fastDelivery
	delivery.MaxAttempts = 3
	reg := prometheus.NewRegistry()
	h, down, attempts := durableHarness(t, actors.Options{Delivery: delivery, Registerer: reg})
	down.set("d/b", true)
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{1}})
	sys := h.System()
	var letters []actors.DeadLetter
	actortest.Eventually(t, func() bool {
		var err error
		letters, err = sys.DeadLetters(t.Context(), "d/a")
		return err == nil && len(letters) == 1
	})
	l := letters[0]
	if l.To != "d/b" || l.Attempts != 3 || l.Type != "test.dAdd" || l.Message != (dAdd{1}) || l.Error == "" {
		t.Fatalf("dead letter %+v", l)
	}
	if attempts.Load() != 3 {
		t.Fatalf("%d attempts, want 3", attempts.Load())
	}
	if n := metricValue(t, reg, "fractal_dead_letters_total"); n != 1 {
		t.Fatalf("fractal_dead_letters_total = %v, want 1", n)
	}
	// The lane moves on: the next message is handled.
	down.set("d/b", false)
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{10}})
	h.WaitDelivered("d/a")
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 10 {
		t.Fatalf("counter %d, want 10", n)
	}
	if err := sys.RedriveDeadLetter(t.Context(), "d/a", 12345); !errors.Is(err, actors.ErrNoDeadLetter) {
		t.Fatalf("redrive of an unknown letter: %v", err)
	}
	if err := sys.RedriveDeadLetter(t.Context(), "d/a", l.ID); err != nil {
		t.Fatal(err)
	}
	h.WaitDelivered("d/a")
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 11 {
		t.Fatalf("counter %d after redrive, want 11", n)
	}
	if letters, err := sys.DeadLetters(t.Context(), "d/a"); err != nil || len(letters) != 0 {
		t.Fatalf("dead letters after redrive: %v, %v", letters, err)
	}
	// Redriving a letter the receiver handled is harmless: the inbox says so.
	if n := h.QueryInt("d/b", `SELECT count(*) FROM _fractal_skipped`); n != 0 {
		t.Fatalf("%d skipped rows left after the redrive", n)
	}
}

// unreachable serves d/far on a node that cannot be reached.
type unreachable struct{ tries atomic.Int64 }

func (u *unreachable) Local(p actors.Path) bool { return p.String() != "d/far" }

func (u *unreachable) Request(ctx context.Context, p actors.Path, msg any) (any, error) {
	u.tries.Add(1)
	return nil, errors.New("test: node unreachable")
}

// A call that cannot be delivered dies; discarding it answers the caller
// with ErrDiscarded, so that it can compensate.
func TestDiscardDeadCallAnswersCaller(t *testing.T) {
	delivery := fastDelivery
	delivery.MaxAttempts = 2
	far := &unreachable{}
	h, _, _ := durableHarness(t, actors.Options{Delivery: delivery, Remote: far})
	id := h.MustRequest("d/a", dCall{To: "d/far", N: 1}).(int64)
	sys := h.System()
	actortest.Eventually(t, func() bool {
		l, err := sys.DeadLetters(t.Context(), "d/a")
		return err == nil && len(l) == 1 && l[0].ID == id && l[0].Call
	})
	if l, _ := sys.DeadLetters(t.Context(), "d/a"); l[0].Attempts != 2 {
		t.Fatalf("dead after %d attempts, want 2", l[0].Attempts)
	}
	if err := sys.DiscardDeadLetter(t.Context(), "d/a", 999); !errors.Is(err, actors.ErrNoDeadLetter) {
		t.Fatalf("discard of an unknown letter: %v", err)
	}
	if err := sys.DiscardDeadLetter(t.Context(), "d/a", id); err != nil {
		t.Fatal(err)
	}
	actortest.Eventually(t, func() bool { return h.QueryInt("d/a", `SELECT count(*) FROM replies`) == 1 })
	row := h.Query("d/a", `SELECT id, err FROM replies`)[0]
	if row[0].(int64) != id || row[1].(string) != actors.ErrDiscarded.Error() {
		t.Fatalf("reply %v, want id %d with %q", row, id, actors.ErrDiscarded)
	}
	if !errors.Is(actors.Reply{Error: row[1].(string)}.Err(), actors.ErrDiscarded) {
		t.Fatal("Reply.Err does not wrap ErrDiscarded")
	}
}

// Messages stored before a Close are delivered after the next Open,
// without any request to their sender.
func TestSendDurableSurvivesReopen(t *testing.T) {
	h, down, _ := durableHarness(t, actors.Options{})
	down.set("d/b", true)
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{1, 2}})
	actortest.Eventually(t, func() bool { return h.QueryInt("d/a", `SELECT max(attempts) FROM _fractal_outbox`) >= 1 })
	h.Close()
	down.set("d/b", false)
	h.Reopen()
	actortest.Eventually(t, func() bool { return h.Exists("d/b") && h.QueryInt("d/b", `SELECT n FROM counter`) == 3 })
	h.WaitDelivered("d/a")
}

// metricValue returns the value of the counter or gauge registered in reg
// under name (one series).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// A part restarted by its parent sends durable messages again: its
// outbox's in-memory state starts over with the new incarnation.
func TestSendDurableAfterRestart(t *testing.T) {
	h, _, _ := durableHarness(t, actors.Options{})
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{1}})
	h.WaitDelivered("d/a")
	h.Restart("d/a")
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{2}})
	actortest.Eventually(t, func() bool { return h.QueryInt("d/b", `SELECT n FROM counter`) == 3 })
	h.WaitDelivered("d/a")
}

// A message stored by a part just activated does not overtake the older
// ones of its lane still in the outbox: the receiver, which has no row for
// this sender yet, would take the newer one for the lane's start and the
// older one for a duplicate.
func TestSendDurableNewMessageWaitsForOlderOnes(t *testing.T) {
	// One message per batch, released at its commit (no barrier): the
	// activation's look at the outbox cannot join the batch of the request
	// that activates the part, nor come before that batch's release.
	h, down, _ := durableHarness(t, actors.Options{MaxBatch: 1, Durability: actors.ProcessCrash})
	down.set("d/b", true)
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{1}})
	actortest.Eventually(t, func() bool { return h.QueryInt("d/a", `SELECT max(attempts) FROM _fractal_outbox`) >= 1 })
	h.Close()
	down.set("d/b", false)
	// Without its alarm index, nothing wakes d/a before the request below
	// activates it (the index heals then).
	if err := os.Remove(filepath.Join(h.Dir(), "_fractal_alarms.db")); err != nil {
		t.Fatal(err)
	}
	h.Reopen()
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{2}}) // activates d/a: its old message waits in the outbox
	h.WaitDelivered("d/a")
	rows := h.Query("d/b", `SELECT n FROM log ORDER BY i`)
	if len(rows) != 2 || rows[0][0].(int64) != 1 || rows[1][0].(int64) != 2 {
		t.Fatalf("d/b handled %v, want [1 2] in that order", rows)
	}
}
