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
	p.carryOut(sup, seg, d, reason, message)
}

// carryOut does what the supervisor decided after child seg exited (a
// failure, or a normal exit: see childExit). A decision that concerns the
// exited child alone is carried out at once: protoactor-go's restart
// (after the backoff delay), or a stop. A group restart (one_for_all,
// rest_for_one) runs as a plan, one child at a time, in OTP's order (see
// groupPlan).
func (p *part) carryOut(sup actor.Supervisor, seg string, d supervisor.Decision, reason, message any) {
	if d.Escalate {
		for _, c := range p.kids.active {
			sup.StopChildren(c.pid)
		}
		p.kids.plan = nil
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
	p.countRestarts(d.Restart)
	if len(d.Stop) > 0 || len(d.Restart) > 1 {
		c, ok := sup.(actor.Context)
		if !ok {
			p.logger().Error("supervision: parent context cannot spawn; children stopped instead", "child", seg)
			for _, c := range p.kids.active {
				sup.StopChildren(c.pid)
			}
			return
		}
		p.planGroup(c, seg, d)
		return
	}
	child := p.kids.active[seg]
	if child == nil {
		return
	}
	if !slices.Contains(d.Restart, seg) {
		sup.StopChildren(child.pid)
		return
	}
	if d.Delay <= 0 {
		sup.RestartChildren(child.pid)
		return
	}
	// RestartChildren only posts system messages: safe from the timer's
	// goroutine. A failed child's mailbox is suspended until then.
	p.sys.clock.AfterFunc(d.Delay, func() { sup.RestartChildren(child.pid) })
}

// countRestarts counts the children about to be restarted.
func (p *part) countRestarts(segs []string) {
	n := 0
	for _, id := range segs {
		c := p.kids.active[id]
		if c == nil {
			continue
		}
		n++
		if m := p.sys.metrics; m != nil {
			m.restarts.WithLabelValues(c.kind.Name, p.kind.supervision().Strategy.String()).Inc()
		}
	}
	p.sys.restarts.Add(uint64(n))
}

func (p *part) childByPID(who *actor.PID) (string, *part) {
	for seg, c := range p.kids.active {
		if c.pid.Equal(who) {
			return seg, c
		}
	}
	return "", nil
}

// exit ends p normally after the message being handled (Context.Stop): its
// batch commits now, and its parent decides what comes next (childExit).
func (p *part) exit() {
	if p.kind == nil || p.state != running {
		return
	}
	p.commit()
	p.state = exiting
	if !p.parent.post(childExit{p}) {
		return // the parent is stopping, and p with it
	}
}

// childExit tells a parent that its child ended normally (Context.Stop).
type childExit struct{ child *part }

func (m childExit) apply(p *part, c actor.Context) {
	seg := m.child.path.Name()
	sup, ok := c.(actor.Supervisor)
	if p.kids.active[seg] != m.child || !ok {
		return
	}
	s := p.supervisorOf()
	now := p.sys.clock.Now()
	d, err := s.Exit(now, seg, supervisor.Normal, rand.Float64())
	if errors.Is(err, supervisor.ErrUnknownChild) {
		if err = s.Add(seg, m.child.kind.Restart); err == nil {
			d, err = s.Exit(now, seg, supervisor.Normal, rand.Float64())
		}
	}
	if err != nil {
		p.logger().Error("supervision", "child", seg, "err", err)
		sup.StopChildren(m.child.pid)
		return
	}
	p.logger().Debug("child exited", "child", seg, "decision", d.String())
	p.carryOut(sup, seg, d, "normal exit of "+m.child.path.String(), nil)
}
