package actors_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"time"

	"github.com/fractalrt/fractal/actors"
)

// Asking every part that matches a pattern at once: each counter under
// "counters" is asked, and each yields its reply (or its error) as it
// arrives.
func ExampleSystem_Scatter() {
	ctx := context.Background()
	dir := tempDir()
	defer os.RemoveAll(dir)
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: counters()})
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close(ctx)
	for _, name := range []string{"alice", "bob", "carol"} {
		if _, err := sys.Request(ctx, "counters/"+name, Incr{By: len(name)}); err != nil {
			log.Fatal(err)
		}
	}

	// The deadline bounds the whole search: a part that has not answered
	// by then yields an error wrapping context.DeadlineExceeded.
	search, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var lines []string
	for r := range sys.Scatter(search, "counters/*", Incr{By: 1}, &actors.ScatterOptions{Concurrency: 2}) {
		if r.Err != nil {
			lines = append(lines, fmt.Sprintf("%s failed: %v", r.Path, r.Err))
			continue
		}
		lines = append(lines, fmt.Sprintf("%s: %v", r.Path, r.Reply))
	}
	slices.Sort(lines) // results come in the order they arrive
	for _, l := range lines {
		fmt.Println(l)
	}

	for r := range sys.Scatter(search, "counters/*/*", Incr{By: 1}, nil) {
		fmt.Println("no kind that deep:", errors.Is(r.Err, actors.ErrNoKind))
	}
	// Output:
	// counters/alice: 6
	// counters/bob: 4
	// counters/carol: 6
	// no kind that deep: true
}
