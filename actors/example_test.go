package actors_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// Incr is the message of the counter kind below.
type Incr struct{ By int }

// counters declares a two-level tree: "counters", the whole, and
// "counters/*", one counter per part, each in its own SQLite file.
func counters() []actors.Kind {
	counter := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		m, ok := msg.(Incr)
		if !ok {
			return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
		}
		var n int
		err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, m.By).Scan(&n)
		return n, err // released to the caller only after the commit
	})
	return []actors.Kind{
		{Name: "counters", Pattern: "counters", Handler: actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
			return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
		}),
			// How "counters" supervises its children: restart only the
			// failed one, at most 5 times a minute.
			Supervision: supervisor.Spec{Strategy: supervisor.OneForOne, Intensity: 5, Period: time.Minute},
		},
		{Name: "counter", Pattern: "counters/*", Handler: counter, Migrations: []persistence.Migration{
			{Name: "counter", SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`},
		}},
	}
}

// Defining a kind: a level of the tree, its schema, and its handler.
func ExampleKind() {
	dir := tempDir()
	defer os.RemoveAll(dir)
	sys, err := actors.Open(context.Background(), dir, actors.Options{Kinds: counters()})
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close(context.Background())
	fmt.Print(sys.Tree())
	// Output:
	// counters counters (0 migrations, permanent, children: one_for_one intensity=5 period=1m0s)
	//   counter counters/* (1 migrations, permanent, children: default supervision)
}

// Opening a system on a data directory, closing it, and opening it again:
// every part comes back with its state.
func ExampleOpen() {
	ctx := context.Background()
	dir := tempDir()
	defer os.RemoveAll(dir)
	for range 2 {
		sys, err := actors.Open(ctx, dir, actors.Options{Kinds: counters()})
		if err != nil {
			log.Fatal(err)
		}
		n, err := sys.Request(ctx, "counters/visits", Incr{By: 1})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("visits:", n)
		if err := sys.Close(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// visits: 1
	// visits: 2
}

// Sending a request to a path: the part is activated on demand, handles the
// message in a transaction on its file, and replies after the commit.
func ExampleSystem_Request() {
	ctx := context.Background()
	dir := tempDir()
	defer os.RemoveAll(dir)
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: counters()})
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close(ctx)

	n, err := sys.Request(ctx, "counters/alice@example.org", Incr{By: 2})
	fmt.Println(n, err)

	_, err = sys.Request(ctx, "counters/../../etc/passwd", Incr{By: 1})
	fmt.Println(errors.Is(err, actors.ErrInvalidPath))

	_, err = sys.Request(ctx, "counters/alice@example.org", "hello")
	fmt.Println(err)
	// Output:
	// 2 <nil>
	// true
	// actors: unknown message type: string
}

func tempDir() string {
	dir, err := os.MkdirTemp("", "fractal-example-")
	if err != nil {
		log.Fatal(err)
	}
	return dir
}
