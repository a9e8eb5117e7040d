// Command fractal looks inside the data directory of a fractal system:
// every part is a plain SQLite file, so one command can show the tree, run
// a read-only query on one part or on every part matching a pattern, check
// every file's integrity, and back a subtree up.
//
//	fractal tree [-json] DIR [PATH]
//	fractal sql [-format table|csv|json] [-parallel N] DIR PATH|PATTERN QUERY
//	fractal check [-parallel N] DIR
//	fractal backup [-parallel N] DIR DEST [PATH]
//	fractal restore BACKUP DIR
//	fractal move [-etcd ENDPOINTS] [-prefix P] SUBTREE NODE
//
// Every command is safe against a running system: parts are opened
// read-only (mode=ro and PRAGMA query_only), so SQLite itself refuses any
// write, and they are read through SQLite's WAL snapshot, which a writer
// never tears. restore refuses a data directory that a system has open.
// move asks a cluster (package cluster) to move a subtree to another node;
// it needs only the cluster's etcd endpoints.
//
// tree marks "(deleted)" a part whose deletion a crash cut short (its
// parent removes its files when it next activates). Every command skips
// the runtime's own names, which start with '_', a deleted part's trash
// among them.
//
// Install with: go install github.com/fractalrt/fractal/cmd/fractal@latest
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  fractal tree [-json] DIR [PATH]
  fractal sql [-format table|csv|json] [-parallel N] DIR PATH|PATTERN QUERY
  fractal check [-parallel N] DIR
  fractal backup [-parallel N] DIR DEST [PATH]
  fractal restore BACKUP DIR
  fractal move [-etcd ENDPOINTS] [-prefix P] [-timeout D] SUBTREE NODE

PATH is a part's path (mail/example.org/alice@example.org); PATTERN may use *
for any one segment (mail/*/*). Parts are opened read-only.
`

// run executes one command and returns the process's exit status: 0 on
// success, 1 when the command failed (or a check found a damaged file), 2
// for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "tree":
		err = cmdTree(ctx, args[1:], stdout, stderr)
	case "sql":
		err = cmdSQL(ctx, args[1:], stdout, stderr)
	case "check":
		err = cmdCheck(ctx, args[1:], stdout, stderr)
	case "backup":
		err = cmdBackup(ctx, args[1:], stdout, stderr)
	case "restore":
		err = cmdRestore(ctx, args[1:], stdout, stderr)
	case "move":
		err = cmdMove(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usageError("unknown command %q", args[0])
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "fractal:", err)
	if _, ok := err.(usageErr); ok {
		fmt.Fprint(stderr, usage)
		return 2
	}
	return 1
}

type usageErr string

func (e usageErr) Error() string { return string(e) }

func usageError(format string, args ...any) error { return usageErr(fmt.Sprintf(format, args...)) }
