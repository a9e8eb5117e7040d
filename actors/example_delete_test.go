package actors_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/fractalrt/fractal/actors"
)

// Deleting a part: its file and its parent's record go, and messages to
// it fail with ErrNoPart until its path is reused.
func ExampleSystem_Delete() {
	ctx := context.Background()
	dir := tempDir()
	defer os.RemoveAll(dir)
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: counters()})
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close(ctx)

	for _, c := range []string{"counters/cart-1", "counters/cart-2"} {
		if _, err := sys.Request(ctx, c, Incr{By: 1}); err != nil {
			log.Fatal(err)
		}
	}
	if err := sys.Delete(ctx, "counters/cart-1"); err != nil {
		log.Fatal(err)
	}
	children, _ := sys.Children(ctx, "counters")
	fmt.Println(children)

	_, err = sys.Request(ctx, "counters/cart-1", Incr{By: 1})
	fmt.Println(errors.Is(err, actors.ErrNoPart))

	if err := sys.Reuse(ctx, "counters/cart-1"); err != nil {
		log.Fatal(err)
	}
	n, err := sys.Request(ctx, "counters/cart-1", Incr{By: 1})
	fmt.Println(n, err) // a new part, with a new file
	// Output:
	// [cart-2]
	// true
	// 1 <nil>
}
