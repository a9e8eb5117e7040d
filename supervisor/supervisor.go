package supervisor

import (
	"fmt"
	"strings"
	"time"
)

// Child is a supervised child as reported by Supervisor.Children.
type Child struct {
	ID      string
	Restart RestartType
}

// Decision is what the caller must do after an exit, in this order:
//
//  1. terminate the children in Stop, one after the other;
//  2. if Escalate, fail upward to the parent and stop here;
//  3. forget the children in Remove;
//  4. wait Delay, then start the children in Restart, one after the other.
//
// The zero Decision means there is nothing to do. The exited child itself
// is never in Stop: it is already gone.
type Decision struct {
	// Stop lists live children to terminate, in reverse start order. They
	// are either restarted (they are also in Restart), or temporary and
	// removed (they are also in Remove), or, on escalation, forgotten.
	Stop []string
	// Restart lists the children to start again, in start order: the
	// exited child and, for OneForAll and RestForOne, its non-temporary
	// siblings in the group. They keep their place in the start order.
	Restart []string
	// Delay is how long to wait before starting the children in Restart.
	// It is zero unless a Backoff is configured, and always zero when
	// Restart is empty.
	Delay time.Duration
	// Remove lists children the Supervisor has forgotten without
	// restarting them, in start order: the exited child when its restart
	// type says not to restart it, and temporary siblings that had to be
	// terminated for a group restart.
	Remove []string
	// Escalate reports that the restart intensity was exceeded. The
	// Supervisor restarts nothing: Stop lists every other child, and the
	// caller must terminate them and then fail its own parent, exactly as
	// an OTP supervisor terminates its children and then itself. The
	// Supervisor has already forgotten all children and its restart
	// history, as if it had just been created.
	Escalate bool
}

// String formats the decision as "stop c,b restart a,b remove c delay 0s"
// or "stop c,b escalate", leaving out empty parts, and "none" for the zero
// Decision. The delay is shown whenever Restart is not empty.
func (d Decision) String() string {
	var parts []string
	if len(d.Stop) > 0 {
		parts = append(parts, "stop "+strings.Join(d.Stop, ","))
	}
	if len(d.Restart) > 0 {
		parts = append(parts, "restart "+strings.Join(d.Restart, ","))
	}
	if len(d.Remove) > 0 {
		parts = append(parts, "remove "+strings.Join(d.Remove, ","))
	}
	if len(d.Restart) > 0 || d.Delay != 0 {
		parts = append(parts, "delay "+d.Delay.String())
	}
	if d.Escalate {
		parts = append(parts, "escalate")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// Supervisor is the restart decision state of one supervising parent: its
// children in start order and its recent restart times. It is a pure state
// machine: it starts nothing, stops nothing, reads no clock and holds no
// goroutine; events go in through Add, Remove and Exit, decisions come out.
//
// A Supervisor is not safe for concurrent use; drive it from the one
// goroutine (actor) that owns the children.
type Supervisor struct {
	spec       Spec
	byID       map[string]*node
	head, tail *node // start order, head first
	// history holds the times of the restarts still inside the window,
	// oldest first. It never holds more than Intensity+1 entries.
	history []time.Time
}

type node struct {
	Child
	prev, next *node
}

// New returns a Supervisor without children for spec, with OTP's defaults
// applied (see Spec.Intensity). It fails with an error wrapping
// ErrInvalidSpec if spec does not validate.
func New(spec Spec) (*Supervisor, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &Supervisor{spec: spec.withDefaults(), byID: make(map[string]*node)}, nil
}

// Spec returns the effective spec, with defaults applied.
func (s *Supervisor) Spec() Spec { return s.spec }

// Len returns the number of supervised children.
func (s *Supervisor) Len() int { return len(s.byID) }

// Children returns the supervised children in start order. The slice is a
// copy. Terminating them in reverse order is the orderly shutdown of the
// parent.
func (s *Supervisor) Children() []Child {
	out := make([]Child, 0, len(s.byID))
	for n := s.head; n != nil; n = n.next {
		out = append(out, n.Child)
	}
	return out
}

// Add records that the child id was started, placing it last in the start
// order. Call it once per child, when the parent first starts it; children
// restarted on a Decision keep their place and must not be added again.
//
// Adding an id that is already supervised fails with ErrDuplicateChild and
// changes nothing: a silent move to the end would corrupt the order that
// RestForOne depends on. To start a new child under a reused id, Remove the
// old one first. An empty id or an unknown restart type fails with
// ErrInvalidChild.
func (s *Supervisor) Add(id string, rt RestartType) error {
	if id == "" {
		return fmt.Errorf("%w: empty id", ErrInvalidChild)
	}
	if !rt.valid() {
		return fmt.Errorf("%w: %q has unknown restart type %d", ErrInvalidChild, id, uint8(rt))
	}
	if _, ok := s.byID[id]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateChild, id)
	}
	n := &node{Child: Child{ID: id, Restart: rt}, prev: s.tail}
	if s.tail == nil {
		s.head = n
	} else {
		s.tail.next = n
	}
	s.tail = n
	s.byID[id] = n
	return nil
}

// Remove forgets the child id without any restart accounting. Use it when
// the parent itself stopped the child: passivation, a deliberate stop, the
// parent's own shutdown. Such exits must not be reported with Exit, which
// would restart a permanent child. Removing an unknown id fails with
// ErrUnknownChild and changes nothing.
func (s *Supervisor) Remove(id string) error {
	n, ok := s.byID[id]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownChild, id)
	}
	s.unlink(n)
	return nil
}

// Restarts returns the number of restarts inside the window ending at now:
// those that happened less than Period before now. It does not change the
// Supervisor.
func (s *Supervisor) Restarts(now time.Time) int {
	count := 0
	for _, t := range s.history {
		if now.Sub(t) < s.spec.Period {
			count++
		}
	}
	return count
}

// Exit reports that the child id exited on its own, for reason, at time
// now, and returns what to do about it. rnd, a number in [0, 1) (for
// example rand.Float64()), chooses the backoff jitter; passing it in keeps
// Exit deterministic.
//
// The exited child is restarted if its restart type asks for it: always
// for Permanent, after an abnormal reason for Transient, never for
// Temporary. Otherwise it is removed and nothing else happens, whatever the
// strategy. A restart is counted once in the window even when the strategy
// restarts a whole group; if that makes the count exceed Intensity, the
// Decision escalates instead (see Decision.Escalate).
//
// Report only exits the Supervisor did not order: the terminations the
// caller performs to carry out a Decision are part of that Decision and
// must not be fed back. An unknown id fails with ErrUnknownChild and
// changes nothing.
//
// now should come from a monotonic clock (time.Now does). Restarts are
// counted in the half-open window (now-Period, now]: a restart that
// happened exactly Period ago no longer counts.
func (s *Supervisor) Exit(now time.Time, id string, reason ExitReason, rnd float64) (Decision, error) {
	n, ok := s.byID[id]
	if !ok {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownChild, id)
	}
	if !shouldRestart(n.Restart, reason) {
		s.unlink(n)
		return Decision{Remove: []string{id}}, nil
	}

	if s.record(now) {
		d := Decision{Escalate: true}
		for m := s.tail; m != nil; m = m.prev {
			if m != n {
				d.Stop = append(d.Stop, m.ID)
			}
		}
		s.reset()
		return d, nil
	}

	d := Decision{Delay: s.spec.Backoff.Delay(len(s.history), rnd)}
	var first *node // first child of the group restarted with n
	switch s.spec.Strategy {
	case OneForAll:
		first = s.head
	case RestForOne:
		first = n
	default:
		d.Restart = []string{id}
		return d, nil
	}
	for m := s.tail; ; m = m.prev {
		if m != n {
			d.Stop = append(d.Stop, m.ID)
		}
		if m == first {
			break
		}
	}
	for m := first; m != nil; {
		next := m.next
		if m.Restart == Temporary {
			d.Remove = append(d.Remove, m.ID)
			s.unlink(m)
		} else {
			d.Restart = append(d.Restart, m.ID)
		}
		m = next
	}
	return d, nil
}

// shouldRestart applies the restart type to the exit reason.
func shouldRestart(rt RestartType, reason ExitReason) bool {
	switch rt {
	case Permanent:
		return true
	case Transient:
		return reason.Abnormal()
	}
	return false
}

// record adds a restart at now to the sliding window, drops the restarts
// that aged out, and reports whether the window now holds more than
// Intensity restarts. The window keeps at most Intensity+1 entries: one
// more than the limit is all that is needed to detect the excess.
func (s *Supervisor) record(now time.Time) (exceeded bool) {
	kept := s.history[:0]
	for _, t := range s.history {
		if now.Sub(t) < s.spec.Period {
			kept = append(kept, t)
		}
	}
	kept = append(kept, now)
	if len(kept)-1 > s.spec.Intensity { // len(kept) > Intensity+1, without overflow
		kept = kept[:copy(kept, kept[len(kept)-1-s.spec.Intensity:])]
	}
	s.history = kept
	return len(kept) > s.spec.Intensity
}

// reset forgets all children and the restart history.
func (s *Supervisor) reset() {
	clear(s.byID)
	s.head, s.tail = nil, nil
	s.history = s.history[:0]
}

func (s *Supervisor) unlink(n *node) {
	if n.prev == nil {
		s.head = n.next
	} else {
		n.prev.next = n.next
	}
	if n.next == nil {
		s.tail = n.prev
	} else {
		n.next.prev = n.prev
	}
	n.prev, n.next = nil, nil
	delete(s.byID, n.ID)
}
