package chaos

import (
	"fmt"
	"os"
	"testing"
)

// childEnv names the role of a test binary started by a test of this
// package as its child process (see TestMain): the child runs that role
// instead of the tests.
const childEnv = "FRACTAL_CHAOS_CHILD"

// children are the roles a child process can play.
var children = map[string]func() int{
	"crash": crashChild,
}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		run, ok := children[role]
		if !ok {
			fmt.Fprintf(os.Stderr, "chaos: unknown child role %q\n", role)
			os.Exit(2)
		}
		os.Exit(run())
	}
	os.Exit(m.Run())
}
