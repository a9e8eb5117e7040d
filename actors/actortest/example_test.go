package actortest_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// Messages of the reminder kind.
type (
	remindIn struct{ d time.Duration } // ring after d
	ring     struct{}
	rings    struct{} // how many times it rang
)

func reminders() []actors.Kind {
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case remindIn:
			return nil, c.After(m.d, ring{})
		case ring:
			_, err := c.Exec(`UPDATE rang SET n = n + 1`)
			return nil, err
		case rings:
			var n int
			err := c.QueryRow(`SELECT n FROM rang`).Scan(&n)
			return n, err
		}
		return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
	})
	return []actors.Kind{
		{Name: "reminders", Pattern: "reminders", Handler: h},
		{Name: "reminder", Pattern: "reminders/*", Handler: h, Migrations: []persistence.Migration{
			{SQL: `CREATE TABLE rang (n INTEGER NOT NULL); INSERT INTO rang VALUES (0)`},
		}},
	}
}

// A part's timer of a minute, fired in a moment by advancing a fake clock.
// (Everything the runtime times moves with the clock: advanced past the
// kind's idle timeout, five minutes here, the part would be passivated,
// and its plain timers with it.)
func ExampleClock() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "actortest-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	clk := actortest.NewClock(time.Time{})
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: reminders(), Clock: clk})
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close(ctx)

	if _, err := sys.Request(ctx, "reminders/tea", remindIn{time.Minute}); err != nil {
		log.Fatal(err)
	}
	// The timer is armed once the handler's transaction has committed.
	if err := clk.BlockUntilDueAt(ctx, time.Minute); err != nil {
		log.Fatal(err)
	}
	clk.Advance(59 * time.Second)
	n, _ := sys.Request(ctx, "reminders/tea", rings{})
	fmt.Println("after 59 seconds:", n)
	// Advance runs the due timer, which posts ring to the part, before it
	// returns: the next request is handled after it.
	clk.Advance(time.Second)
	n, _ = sys.Request(ctx, "reminders/tea", rings{})
	fmt.Println("after a minute:", n)
	// Output:
	// after 59 seconds: 0
	// after a minute: 1
}
