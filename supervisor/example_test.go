package supervisor_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/fractalrt/fractal/supervisor"
)

// A parent with three children under one_for_all: when a fails, the others
// are stopped in reverse start order, the temporary one is dropped, and the
// rest restart in start order.
func Example() {
	sup, err := supervisor.New(supervisor.Spec{
		Strategy:  supervisor.OneForAll,
		Intensity: 2,
		Period:    10 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	_ = sup.Add("a", supervisor.Permanent)
	_ = sup.Add("b", supervisor.Transient)
	_ = sup.Add("c", supervisor.Temporary)

	d, _ := sup.Exit(time.Now(), "a", supervisor.Failure, 0.5)
	fmt.Println(d)
	fmt.Println(sup.Children())
	// Output:
	// stop c,b restart a,b remove c delay 0s
	// [{a permanent} {b transient}]
}

// Carrying out a Decision: stop first, escalate if told to, otherwise
// forget the removed children and restart the rest after the delay.
func ExampleSupervisor_Exit() {
	sup, _ := supervisor.New(supervisor.Spec{Strategy: supervisor.RestForOne, Intensity: 1, Period: time.Minute})
	for _, id := range []string{"db", "cache", "api"} {
		_ = sup.Add(id, supervisor.Permanent)
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

	for i, id := range []string{"cache", "db"} {
		d, err := sup.Exit(start.Add(time.Duration(i)*time.Second), id, supervisor.Failure, 0.5)
		if errors.Is(err, supervisor.ErrUnknownChild) {
			continue // a stale event: nothing to do
		}
		for _, c := range d.Stop {
			fmt.Println("stop", c)
		}
		if d.Escalate {
			fmt.Println("escalate to the parent")
			break
		}
		fmt.Println("after", d.Delay, "restart", d.Restart)
	}
	// Output:
	// stop api
	// after 0s restart [cache api]
	// stop api
	// stop cache
	// escalate to the parent
}

func ExampleBackoff_Delay() {
	b := supervisor.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.1}
	for n := 1; n <= 5; n++ {
		fmt.Println(n, b.Delay(n, 0), b.Delay(n, 0.5), b.Delay(n, 1))
	}
	// Output:
	// 1 90ms 100ms 110ms
	// 2 180ms 200ms 220ms
	// 3 360ms 400ms 440ms
	// 4 720ms 800ms 880ms
	// 5 900ms 1s 1.1s
}

func ExampleSpec_Validate() {
	spec := supervisor.Spec{Intensity: 3}
	err := spec.Validate()
	fmt.Println(err)
	fmt.Println(errors.Is(err, supervisor.ErrInvalidSpec))

	spec.Period = 30 * time.Second
	spec.Backoff = supervisor.Backoff{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2}
	fmt.Println(spec.Validate())
	fmt.Println(spec)
	fmt.Println(supervisor.Spec{})
	// Output:
	// supervisor: invalid spec: intensity 3 needs a positive period
	// true
	// <nil>
	// one_for_one intensity=3 period=30s initial=1s max=30s multiplier=2 jitter=0.2
	// one_for_one intensity=1 period=5s
}
