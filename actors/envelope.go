package actors

import (
	"context"
	"sync/atomic"
	"time"
)

// An envelope carries one message to one part.
type envelope struct {
	to    Path
	from  Path // the sending part, for logs; root when sent from outside
	msg   any
	ctx   context.Context
	reply chan result // buffered(1); nil for Send

	// A message a handler sends outside its own subtree escalates: it
	// first goes to via, the smallest whole containing both sender and
	// target, and down from there. relayed is set until it passed via.
	via     Path
	relayed bool

	// A timer set by Context.After: sent to timer's part after delay.
	// timerID names the timer that fired, for the part to check that it
	// was not cancelled meanwhile (see timerFired).
	timer   *part
	delay   time.Duration
	timerID uint64

	// done, when not nil, receives the reply instead of reply (a durable
	// delivery's sender waits so, without a goroutine).
	done func(any, error)

	hops     int         // times rerouted
	finished atomic.Bool // answered (see System.finish)
}

// next returns where env goes next: the common whole it must pass through,
// then its target.
func (env *envelope) next() Path {
	if env.relayed {
		return env.via
	}
	return env.to
}

type result struct {
	val any
	err error
}
