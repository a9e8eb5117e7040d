// Package supervisor decides how a parent part restarts its children, with
// the semantics of Erlang/OTP's supervisor behaviour.
//
// It is the pure decision core of supervision: no goroutines, no clocks, no
// I/O, no knowledge of the actor runtime, storage or network. The parent
// feeds events in (a child started, a child was removed, a child exited at
// a given time) and gets a Decision out (which children to stop, which to
// restart after which delay, which to forget, whether to escalate). The
// adapter that owns the actors carries the Decision out. Everything is
// deterministic: the time and the random number for jitter are arguments.
//
// # Strategies
//
// A Spec's Strategy says which children are restarted when one child exits
// and has to be restarted. Children are kept in start order, the order in
// which they were added.
//
//   - OneForOne ("one_for_one"): only the exited child is restarted.
//   - OneForAll ("one_for_all"): all other children are terminated in
//     reverse start order, then all children are restarted in start order.
//   - RestForOne ("rest_for_one"): the children started after the exited
//     one are terminated in reverse start order, then the exited child and
//     those children are restarted in start order.
//
// A restarted child keeps its place in the start order. If the exited child
// is not to be restarted (see restart types), the strategy does not apply
// and its siblings are left alone.
//
// # Restart types
//
// Each child has a RestartType, given when it is added:
//
//   - Permanent: always restarted, even after a Normal or Shutdown exit.
//   - Transient: restarted only after an abnormal exit (Failure); after a
//     Normal or Shutdown exit it is removed.
//   - Temporary: never restarted. When it exits it is removed; when a
//     sibling's restart makes the supervisor terminate it (OneForAll,
//     RestForOne), it is terminated and removed, not restarted.
//
// An ExitReason is Normal (the child finished on its own), Shutdown (an
// orderly stop requested from outside the supervisor) or Failure (a panic,
// an error, a kill: anything abnormal). The zero ExitReason is Failure.
//
// # Intensity
//
// Like OTP, a Supervisor gives up when restarts come too fast: if more than
// Spec.Intensity (MaxR) restarts happen within Spec.Period (MaxT), the
// restart that exceeds the limit is not carried out and the Supervisor
// escalates. A group restart (OneForAll, RestForOne) counts as one restart.
// Exits that only remove a child do not count.
//
// Restarts are counted in a sliding window: at time now, a restart counts
// if it happened less than Period before now, so restarts that age out of
// the window stop counting. The history is bounded: it keeps at most
// Intensity+1 timestamps, the most that can be needed to detect the excess,
// and it is emptied on escalation.
//
// The zero Spec uses OTP's defaults, DefaultIntensity (1) restart in
// DefaultPeriod (5s). Intensity 0 with a positive Period tolerates no
// restart at all: the first exit that needs a restart escalates.
//
// # Backoff
//
// Spec.Backoff delays restarts exponentially while they pile up in the
// window. With n the number of restarts inside the window, counting the one
// being decided, the delay is
//
//	min(Max, Initial * Multiplier^(n-1)) * (1 + Jitter*(2*rnd-1))
//
// where rnd in [0, 1) is supplied by the caller. The first restart in a
// quiet window waits Initial; each further restart inside the window
// multiplies the delay, up to Max; jitter spreads it by up to ±Jitter of
// the base delay; and once all restarts have aged out of the window the
// delay is back to Initial. Because n is at most Intensity when a restart
// happens, the backoff can only grow as far as the intensity allows: choose
// a larger Intensity and Period (say 10 in a minute) to make room for it.
// The zero Backoff restarts immediately.
//
// # Escalation
//
// When the intensity is exceeded, the Decision has Escalate set and lists
// every other child in Stop, in reverse start order. The caller terminates
// them and then fails upward, to its own parent, which applies its own
// Spec: this is how failures climb the tree. The Supervisor forgets all
// children and its history, so it can serve the restarted parent afresh.
//
// There is deliberately no "resume" decision. A failed child is restarted,
// removed, or its failure escalates; a caller must never resume a failed
// child in place (such as protoactor-go's ResumeDirective), because its
// state is suspect, and must never leave it suspended. When in doubt,
// escalate.
//
// # Driving a Supervisor
//
// One Supervisor belongs to one supervising parent and is driven from the
// goroutine that owns the children; it is not safe for concurrent use.
//
//  1. When the parent starts, create it with New(spec).
//  2. Each time the parent starts a new child, call Add(id, restartType).
//     Children are ordered by these calls. Do not call Add again when
//     restarting a child on a Decision.
//  3. When a child exits without the parent having asked for it (it
//     panicked, failed, or stopped by itself), call Exit(now, id, reason,
//     rnd) with now from time.Now and rnd from rand.Float64, then carry out
//     the Decision: terminate Stop in order; if Escalate, fail the parent;
//     otherwise forget Remove and, after Delay, start Restart in order.
//  4. When the parent stops a child itself (passivation, a deliberate
//     stop), call Remove(id) instead of Exit.
//  5. Terminations the parent causes while carrying out a Decision are part
//     of it and are not reported again. An Exit for a child the Supervisor
//     no longer knows returns ErrUnknownChild and changes nothing, so a
//     stale termination event can be ignored safely.
//
// In an actor runtime whose supervisor strategy sees child failures (as in
// protoactor-go), the strategy calls Exit and maps the Decision onto the
// runtime: restart the Restart children (an in-place restart covers the
// stop-then-start of a child in both Stop and Restart), stop the children
// that are only in Stop, and escalate the failure when told to.
package supervisor
