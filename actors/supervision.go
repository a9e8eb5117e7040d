package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/supervisor"
)

// DefaultSupervision is how a part supervises its children when its kind
// leaves Kind.Supervision zero: one_for_one, at most 10 restarts within 10
// seconds (counted over all its children, as in OTP), restarts delayed by
// 10 ms doubling up to 1 s with 20% jitter. More restarts than that and the
// parent gives up: it stops its children and fails itself, and its own
// parent decides.
var DefaultSupervision = supervisor.Spec{
	Strategy:  supervisor.OneForOne,
	Intensity: 10,
	Period:    10 * time.Second,
	Backoff:   supervisor.Backoff{Initial: 10 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2},
}

// supervision returns the spec with which parts of k supervise their
// children.
func (k *kindSpec) supervision() supervisor.Spec {
	if k == nil || k.Supervision == (supervisor.Spec{}) {
		return DefaultSupervision
	}
	return k.Supervision
}

// supervisorOf returns p's decision state, created on first use. It is
// owned by p's goroutine: protoactor-go runs HandleFailure, spawns and
// Terminated there.
func (p *part) supervisorOf() *supervisor.Supervisor {
	if p.kids.sup == nil {
		sup, err := supervisor.New(p.kind.supervision())
		if err != nil {
			// Specs are validated by Open.
			panic("actors: supervision spec of " + p.path.String() + ": " + err.Error())
		}
		p.kids.sup = sup
	}
	return p.kids.sup
}

// HandleFailure implements actor.SupervisorStrategy: protoactor-go calls it
// on the parent's goroutine when a child's handler panicked. The decision
// is taken by package supervisor, with OTP semantics, and carried out here:
//
//   - a child to restart gets protoactor-go's restart (its file is closed
//     and reopened, its handler rebuilt), after the backoff delay; its
//     mailbox stays suspended meanwhile, so its messages wait;
//   - a child to stop, or to forget (temporary), is stopped; its next
//     message activates it again;
//   - when the intensity is exceeded, the parent stops all its children
//     and fails itself (escalation), so that its own parent decides. It
//     never resumes a child: protoactor-go's escalate-then-resume leaves
//     the child suspended.
func (p *part) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, who *actor.PID, _ *actor.RestartStatistics, reason any, message any) {
	seg, child := p.childByPID(who)
	if child == nil {
		sup.StopChildren(who) // not ours any more: nothing to restart
		return
	}
	child.gauges.failures.Add(1)
	child.setLastError(fmt.Sprint(reason))
	s := p.supervisorOf()
	d, err := s.Exit(p.sys.clock.Now(), seg, supervisor.Failure, rand.Float64())
	if errors.Is(err, supervisor.ErrUnknownChild) {
		// Not known (forgotten after an escalation): add it back first.
		if err = s.Add(seg, child.kind.Restart); err == nil {
			d, err = s.Exit(p.sys.clock.Now(), seg, supervisor.Failure, rand.Float64())
		}
	}
	if err != nil {
		p.logger().Error("supervision", "child", seg, "err", err)
		sup.StopChildren(who)
		return
	}
	p.logger().Warn("child failed", "child", seg, "decision", d.String(), "reason", reason)
	if d.Escalate {
		for _, c := range p.kids.active {
			sup.StopChildren(c.pid)
		}
		if p.kind == nil {
			// The guardian has no parent: its children are stopped and
			// activated again by their next messages.
			p.kids.sup = nil
			return
		}
		p.sys.escalations.Add(1)
		if km := p.km(); km != nil {
			km.escalations.Inc()
		}
		sup.EscalateFailure(reason, message)
		return
	}
	for _, id := range d.Stop {
		if !slices.Contains(d.Restart, id) {
			if c := p.kids.active[id]; c != nil {
				sup.StopChildren(c.pid)
			}
		}
	}
	for _, id := range d.Remove {
		if c := p.kids.active[id]; c != nil && !slices.Contains(d.Restart, id) {
			sup.StopChildren(c.pid)
		}
	}
	var restart []*actor.PID
	for _, id := range d.Restart {
		if c := p.kids.active[id]; c != nil {
			restart = append(restart, c.pid)
		}
	}
	if len(restart) == 0 {
		return
	}
	p.sys.restarts.Add(uint64(len(restart)))
	if m := p.sys.metrics; m != nil {
		strategy := p.kind.supervision().Strategy.String()
		for _, id := range d.Restart {
			if c := p.kids.active[id]; c != nil {
				m.restarts.WithLabelValues(c.kind.Name, strategy).Inc()
			}
		}
	}
	if d.Delay <= 0 {
		sup.RestartChildren(restart...)
		return
	}
	// RestartChildren only posts system messages: safe from the timer's
	// goroutine. The failed child's mailbox is suspended until then.
	p.sys.clock.AfterFunc(d.Delay, func() { sup.RestartChildren(restart...) })
}

func (p *part) childByPID(who *actor.PID) (string, *part) {
	for seg, c := range p.kids.active {
		if c.pid.Equal(who) {
			return seg, c
		}
	}
	return "", nil
}
