package actors

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/supervisor"
)

// A groupPlan carries out a group restart (one_for_all, rest_for_one) as
// OTP does: the children are terminated one after the other, in reverse
// start order, each stop complete (the child and its subtree stopped, its
// file closed) before the next begins; then, after the backoff delay, they
// are started again one after the other, in start order, each one's
// activation (its file opened, Activate run) complete before the next
// begins.
//
// The plan lives in the parent and advances on the parent's goroutine, at
// the events that end a step: a child's Terminated, a started child's
// childStarted, the delay's planStep. Messages for the children of the
// plan that are not running wait in the parent (kids.pending) until the
// plan starts them: they are posted to the new incarnation as it is
// spawned, so they come before any message sent to it directly. A child that
// is removed rather than restarted (temporary) gets its messages once the
// plan is over, and is activated by them as usual.
//
// A failure decided while a plan runs adds its steps to the plan. If the
// parent itself restarts or stops, the plan is dropped with its children.
type groupPlan struct {
	stop    []string        // children still to terminate, in this order
	start   []string        // children to start again, in start order, once all are stopped
	delay   time.Duration   // to wait between the two phases
	waiting string          // the child whose stop or start the plan waits for ("" none)
	delayed bool            // waiting for the delay's planStep
	held    map[string]bool // children whose messages wait until the plan is over or starts them
}

// planStep tells a parent that its plan's delay has passed.
type planStep struct{ plan *groupPlan }

func (m planStep) apply(p *part, c actor.Context) {
	if p.kids.plan == m.plan && m.plan.delayed {
		m.plan.delayed = false
		p.advancePlan(c)
	}
}

// childStarted tells a parent that a child it started for its plan has
// activated.
type childStarted struct{ child *part }

func (m childStarted) apply(p *part, c actor.Context) {
	plan := p.kids.plan
	seg := m.child.path.Name()
	if plan == nil || plan.waiting != seg || p.kids.active[seg] != m.child {
		return
	}
	plan.waiting = ""
	p.advancePlan(c)
}

// planGroup starts (or extends) the plan for decision d, taken after child
// seg exited.
func (p *part) planGroup(c actor.Context, seg string, d supervisor.Decision) {
	plan := p.kids.plan
	if plan == nil {
		plan = &groupPlan{held: map[string]bool{}}
		p.kids.plan = plan
	}
	// The exited child first: it is gone already, as far as OTP is
	// concerned; then the others in the order given (reverse start order).
	for _, id := range append([]string{seg}, d.Stop...) {
		if !slices.Contains(plan.stop, id) && plan.waiting != id {
			plan.stop = append(plan.stop, id)
		}
		plan.held[id] = true
	}
	for _, id := range d.Restart {
		if !slices.Contains(plan.start, id) {
			plan.start = append(plan.start, id)
		}
	}
	plan.delay = max(plan.delay, d.Delay)
	p.advancePlan(c)
}

// advancePlan takes the plan's next steps until one must wait.
func (p *part) advancePlan(c actor.Context) {
	plan := p.kids.plan
	for plan != nil && plan.waiting == "" && !plan.delayed {
		switch {
		case len(plan.stop) > 0:
			seg := plan.stop[0]
			plan.stop = plan.stop[1:]
			if child := p.kids.active[seg]; child != nil {
				plan.waiting = seg
				c.Stop(child.pid) // childTerminated takes the next step
			}
		case plan.delay > 0:
			d := plan.delay
			plan.delay = 0
			plan.delayed = true
			p.sys.clock.AfterFunc(d, func() { p.post(planStep{plan}) })
		case len(plan.start) > 0:
			seg := plan.start[0]
			plan.start = plan.start[1:]
			if p.kids.active[seg] != nil {
				continue // active again already: nothing to start
			}
			known := p.recordChild(seg)
			p.spawnChild(c, seg, known, true)
			// Its held messages go to its mailbox now, behind its start
			// and ahead of any message sent to it directly from now on.
			delete(plan.held, seg)
			p.releasePending(c, seg)
			plan.waiting = seg // childStarted takes the next step
		default:
			// Done: the children that were removed rather than restarted
			// get their messages, which activate them as usual.
			p.kids.plan = nil
			for seg := range plan.held {
				p.releasePending(c, seg)
			}
			return
		}
	}
}

// planHolds reports whether messages for child seg must wait for the plan.
func (p *part) planHolds(seg string) bool {
	return p.kids.plan != nil && p.kids.plan.held[seg]
}
