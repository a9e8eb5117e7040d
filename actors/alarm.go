package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// An Alarm is the message a part's handler receives when one of its
// durable alarms is due (see Context.SetAlarm). Attempt counts the
// deliveries that failed before this one. The handler's success deletes the
// alarm, unless it set the alarm again; its failure (an error or a panic)
// keeps it and retries it with exponential backoff: delivery is at least
// once, so a handler should be idempotent for an alarm.
type Alarm struct {
	Name    string
	Due     time.Time
	Attempt int
}

// MaxAlarmNameBytes bounds an alarm's name.
const MaxAlarmNameBytes = 255

// Durable alarms live in two places. Each part keeps its own alarms in its
// own file (alarmsTable), written in the transaction of the handler that
// sets or cancels them. The System keeps an index of (path, name, due) in
// alarmsFileName, so that due alarms are found without opening any part.
// The index is a superset of the truth: an entry is written before the
// part's transaction commits, and removed only after a delivery committed;
// its due time is never later than the part's. A wake that finds nothing
// due in the part corrects or removes the entry.
const (
	alarmsTable    = "_fractal_alarms"
	alarmsFileName = "_fractal_alarms.db"

	// alarmLease is how long a wake sent to a part holds its index entry
	// before it is sent again (the part could not be reached, or crashed).
	alarmLease = 30 * time.Second

	// alarmWakesPerRound bounds the wakes sent per look at the index.
	alarmWakesPerRound = 256
)

// alarmBackoff delays the retries of an alarm whose handler failed.
var alarmBackoff = supervisor.Backoff{Initial: 100 * time.Millisecond, Max: time.Minute, Multiplier: 2, Jitter: 0.2}

// alarmWake is what the index sends a part whose alarm may be due; it may
// travel to another node (the part's subtree moved there).
type alarmWake struct{ Name string }

func init() { MustRegisterMessage[alarmWake]("fractal.wake") }

// alarmIndex is the System's index of alarms and its waker goroutine.
type alarmIndex struct {
	db   *persistence.DB
	kick chan struct{} // capacity 1: an alarm was set, look again
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func openAlarmIndex(ctx context.Context, dir string, sync persistence.SyncMode, now time.Time) (*alarmIndex, error) {
	db, err := persistence.Open(ctx, filepath.Join(dir, alarmsFileName), &persistence.Options{
		Sync: sync,
		Migrations: []persistence.Migration{{Name: "alarm index", SQL: `
			CREATE TABLE alarms (path TEXT NOT NULL, name TEXT NOT NULL, due INTEGER NOT NULL,
				PRIMARY KEY (path, name)) WITHOUT ROWID;
			CREATE INDEX alarms_due ON alarms (due)`}},
	})
	if err != nil {
		return nil, fmt.Errorf("actors: alarm index: %w", err)
	}
	// Parts that had durable messages to deliver, or a deletion to carry
	// out (Context.Delete), when the last System stopped are woken at
	// once, not when their lease ends. (One pass over the index, whose
	// size is the number of alarms, not of parts.)
	err = db.Update(ctx, func(tx *persistence.Tx) error {
		_, err := tx.Exec(`UPDATE alarms SET due = min(due, ?) WHERE name IN (?, ?)`, now.UnixNano(), outboxAlarm, deleteAlarm)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("actors: alarm index: %w", err)
	}
	return &alarmIndex{db: db, kick: make(chan struct{}, 1), stop: make(chan struct{})}, nil
}

// note records that path may have an alarm name due at due: the entry is
// created, or moved earlier, never later.
func (a *alarmIndex) note(path Path, name string, due time.Time) error {
	err := a.db.Update(context.Background(), func(tx *persistence.Tx) error {
		_, err := tx.Exec(`INSERT INTO alarms (path, name, due) VALUES (?, ?, ?)
			ON CONFLICT (path, name) DO UPDATE SET due = min(due, excluded.due)`, path.String(), name, due.UnixNano())
		return err
	})
	if err == nil {
		a.wakeUp()
	}
	return err
}

// wakeUp makes the waker look at the index again.
func (a *alarmIndex) wakeUp() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// settle sets the entry of (path, name) to due, or removes it when due is
// zero: called once a part's delivery or check has committed.
func (a *alarmIndex) settle(path Path, name string, due time.Time) error {
	if !due.IsZero() {
		defer a.wakeUp() // the waker may be sleeping past the new due time
	}
	return a.db.Update(context.Background(), func(tx *persistence.Tx) error {
		if due.IsZero() {
			_, err := tx.Exec(`DELETE FROM alarms WHERE path = ? AND name = ?`, path.String(), name)
			return err
		}
		_, err := tx.Exec(`INSERT INTO alarms (path, name, due) VALUES (?, ?, ?)
			ON CONFLICT (path, name) DO UPDATE SET due = excluded.due`, path.String(), name, due.UnixNano())
		return err
	})
}

func (s *System) startAlarms() {
	a := s.alarms
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		wait := time.Duration(0)
		for {
			tick, timer := s.after(wait)
			select {
			case <-a.stop:
				timer.Stop()
				return
			case <-a.kick:
				timer.Stop()
			case <-tick:
			}
			now := s.clock.Now()
			next, err := s.fireDueAlarms(now)
			if err != nil {
				s.log.Error("alarm index", "err", err)
			}
			wait = time.Second
			if !next.IsZero() {
				wait = min(wait, max(next.Sub(now), time.Millisecond))
			}
		}
	}()
}

// stopAlarmWaker stops sending wakes; the index stays open for the parts
// still settling their deliveries until Close closes it.
func (s *System) stopAlarmWaker() {
	a := s.alarms
	a.once.Do(func() { close(a.stop) })
	a.wg.Wait()
}

// fireDueAlarms sends a wake for each due entry (at most
// alarmWakesPerRound), leasing each for alarmLease, and returns when the
// next entry is due.
func (s *System) fireDueAlarms(now time.Time) (next time.Time, err error) {
	type due struct{ path, name string }
	var wakes []due
	err = s.alarms.db.Update(context.Background(), func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT path, name FROM alarms WHERE due <= ? ORDER BY due LIMIT ?`, now.UnixNano(), alarmWakesPerRound)
		if err != nil {
			return err
		}
		for rows.Next() {
			var d due
			if err := rows.Scan(&d.path, &d.name); err != nil {
				rows.Close()
				return err
			}
			wakes = append(wakes, d)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, d := range wakes {
			if _, err := tx.Exec(`UPDATE alarms SET due = ? WHERE path = ? AND name = ?`, now.Add(alarmLease).UnixNano(), d.path, d.name); err != nil {
				return err
			}
		}
		var n *int64
		if err := tx.QueryRow(`SELECT min(due) FROM alarms`).Scan(&n); err != nil {
			return err
		}
		if n != nil {
			next = time.Unix(0, *n)
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	for _, d := range wakes {
		p, err := s.target(d.path)
		if err != nil {
			// The tree no longer has this part: nothing can run it.
			s.log.Warn("alarm for an undeclared path dropped", "path", d.path, "alarm", d.name, "err", err)
			if err := s.alarms.settle(Path{s: d.path}, d.name, time.Time{}); err != nil {
				return next, err
			}
			continue
		}
		env := &envelope{to: p, from: p, msg: alarmWake{d.name}, ctx: context.Background()}
		if r := s.opts.Remote; r != nil && !r.Local(p) {
			// The part lives on another node now (its subtree moved):
			// the wake activates it there, which notes its alarms and
			// undelivered messages in that node's index, so this entry
			// can go once the wake arrived.
			name := d.name
			env.done = func(_ any, err error) {
				if err == nil {
					err = s.alarms.settle(p, name, time.Time{})
				}
				if err != nil {
					s.log.Warn("alarm wake for another node", "path", p.String(), "alarm", name, "err", err) // the lease sends it again
				}
			}
		} else {
			name := d.name
			env.done = func(_ any, err error) {
				if errors.Is(err, ErrNoPart) {
					// Deleted (its deletion was cut short before it
					// cleared the index): nothing will run it.
					err = s.alarms.settle(p, name, time.Time{})
				}
				if err != nil {
					s.log.Warn("message dropped", "to", p.String(), "type", "alarm wake", "alarm", name, "err", err)
				}
			}
		}
		s.inflight.add()
		s.deliver(env)
	}
	if len(wakes) == alarmWakesPerRound {
		next = now // more are due: look again at once
	}
	return next, nil
}

// SetAlarm sets (or moves) the durable alarm name of this part to at: the
// part's handler receives an Alarm message then, even if the part is
// passivated meanwhile or the process restarts. The alarm is part of the
// message's transaction: if the handler fails, it is not set.
func (c *Context) SetAlarm(name string, at time.Time) error {
	if err := c.usable(); err != nil {
		return err
	}
	if name == "" || len(name) > MaxAlarmNameBytes {
		return fmt.Errorf("actors: alarm name must be 1 to %d bytes, got %d", MaxAlarmNameBytes, len(name))
	}
	if strings.HasPrefix(name, reservedAlarmPrefix) {
		return fmt.Errorf("actors: alarm names starting with %q are the runtime's", reservedAlarmPrefix)
	}
	return c.setAlarm(name, at)
}

// setAlarm is SetAlarm for any name, the runtime's too.
func (c *Context) setAlarm(name string, at time.Time) error {
	// The index first: should this transaction commit, the index already
	// knows; should it roll back, a wake finds nothing and cleans up.
	if err := c.part.sys.alarms.note(c.part.path, name, at); err != nil {
		return err
	}
	if err := c.part.install(c.tx, compAlarms); err != nil {
		return err
	}
	_, err := c.tx.ExecContext(context.Background(), `INSERT INTO `+alarmsTable+` (name, due, attempt) VALUES (?, ?, 0)
		ON CONFLICT (name) DO UPDATE SET due = excluded.due, attempt = 0`, name, at.UnixNano())
	return err
}

// CancelAlarm removes the durable alarm name of this part, if set, in the
// message's transaction.
func (c *Context) CancelAlarm(name string) error {
	if err := c.usable(); err != nil {
		return err
	}
	due, _, err := c.part.readAlarm(c.tx, name)
	if err != nil || due.IsZero() {
		return err
	}
	_, err = c.tx.ExecContext(context.Background(), `DELETE FROM `+alarmsTable+` WHERE name = ?`, name)
	return err
}

// readAlarm returns the due time and attempts of alarm name in p's file,
// or a zero time when it is not set.
func (p *part) readAlarm(tx *persistence.Tx, name string) (time.Time, int, error) {
	if ok, err := p.has(tx, compAlarms); err != nil || !ok {
		return time.Time{}, 0, err
	}
	var due int64
	var attempt int
	err := tx.QueryRowContext(context.Background(), `SELECT due, attempt FROM `+alarmsTable+` WHERE name = ?`, name).Scan(&due, &attempt)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, 0, nil
	}
	if err != nil {
		return time.Time{}, 0, err
	}
	return time.Unix(0, due), attempt, nil
}

// alarmAfterDelivery runs in the batch transaction after the handler of
// alarm a returned: on success the alarm is deleted unless the handler set
// it again; on failure its attempt count grows and it is moved later by the
// backoff. It returns the due time the index must settle on once the batch
// has committed (zero: remove the entry).
func (p *part) alarmAfterDelivery(tx *persistence.Tx, a Alarm, failed bool) (time.Time, error) {
	if failed {
		retry := p.sys.clock.Now().Add(alarmBackoff.Delay(a.Attempt+1, rand.Float64()))
		_, err := tx.ExecContext(context.Background(), `UPDATE `+alarmsTable+` SET due = ?, attempt = attempt + 1 WHERE name = ?`, retry.UnixNano(), a.Name)
		return retry, err
	}
	if _, err := tx.ExecContext(context.Background(), `DELETE FROM `+alarmsTable+` WHERE name = ? AND due = ?`, a.Name, a.Due.UnixNano()); err != nil {
		return time.Time{}, err
	}
	due, _, err := p.readAlarm(tx, a.Name) // set again by the handler?
	return due, err
}

// settleAlarm brings the index entry of p's alarm name to what p's file
// says, once that is durable.
func (p *part) settleAlarm(name string, due time.Time) {
	if err := p.sys.alarms.settle(p.path, name, due); err != nil {
		p.logger().Error("alarm index", "alarm", name, "err", err) // the lease sends it again
	}
}

// registerAlarms notes p's alarms in the System's index when p opens, so
// that an index that lost entries (a file restored from a backup, an index
// deleted) heals with every activation.
func (p *part) registerAlarms() {
	type alarm struct {
		name string
		due  int64
	}
	var alarms []alarm
	err := p.db.View(context.Background(), func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT name, due FROM ` + alarmsTable)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a alarm
			if err := rows.Scan(&a.name, &a.due); err != nil {
				return err
			}
			alarms = append(alarms, a)
		}
		return rows.Err()
	})
	for _, a := range alarms {
		if err == nil {
			err = p.sys.alarms.note(p.path, a.name, time.Unix(0, a.due))
		}
	}
	if err != nil {
		p.logger().Error("registering alarms", "err", err)
	}
}
