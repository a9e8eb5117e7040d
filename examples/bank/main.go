// Command bank is fractal's example of durable messages: a bank whose
// branches and accounts each own a SQLite file, with transfers between
// accounts as sagas of exactly-once messages (see package
// github.com/fractalrt/fractal/examples/bank/bank).
//
//	go run ./examples/bank -data DIR
//
// opens two branches of accounts, makes deposits and transfers (one to a
// frozen account, which is refunded), waits until every durable message is
// delivered, audits the bank and exits 0 when it is consistent.
//
//	go run ./examples/bank -data DIR -serve
//
// reads requests from its standard input, one per line, and answers each on
// its standard output once it is durable; the crash test drives it so (see
// crash_test.go):
//
//	D <id> <account> <amount>        deposit           -> OK <id> | ERR <id> <error>
//	T <id> <from> <to> <amount>      transfer          -> OK <id> | NO <id> (insufficient funds) | ERR <id> <error>
//	F <account> <0|1>                (un)freeze        -> OK <account> | ERR <account> <error>
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/examples/bank/bank"
)

func main() {
	data := flag.String("data", filepath.Join("data", "bank"), "data directory (created if missing)")
	serve := flag.Bool("serve", false, "serve requests from standard input (see the command's documentation)")
	verbose := flag.Bool("v", false, "log the runtime's events to stderr")
	flag.Parse()
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var err error
	if *serve {
		err = serveLines(*data, os.Stdin, os.Stdout, logger)
	} else {
		err = demo(*data, os.Stdout, logger)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bank:", err)
		os.Exit(1)
	}
}

func open(dir string, logger *slog.Logger) (*actors.System, error) {
	return actors.Open(context.Background(), dir, actors.Options{Kinds: bank.Kinds(), Logger: logger})
}

func demo(dir string, out io.Writer, logger *slog.Logger) error {
	sys, err := open(dir, logger)
	if err != nil {
		return err
	}
	defer sys.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	accounts := []string{"bank/north/ada", "bank/north/bob", "bank/south/cyd", "bank/south/dee"}
	run := time.Now().UnixNano() // IDs unique across runs on the same directory
	for i, a := range accounts {
		if _, err := sys.Request(ctx, a, bank.Deposit{ID: fmt.Sprintf("open-%d-%d", run, i), Amount: 100}); err != nil {
			return err
		}
	}
	if _, err := sys.Request(ctx, "bank/south/dee", bank.Freeze{Frozen: true}); err != nil {
		return err
	}
	transfers := []bank.Transfer{
		{To: "bank/north/bob", Amount: 30},  // within a branch
		{To: "bank/south/cyd", Amount: 20},  // across branches: through bank
		{To: "bank/south/dee", Amount: 10},  // to a frozen account: refunded
		{To: "bank/south/cyd", Amount: 500}, // more than ada has: refused at once
	}
	for i, t := range transfers {
		t.ID = fmt.Sprintf("t-%d-%d", run, i)
		_, err := sys.Request(ctx, "bank/north/ada", t)
		switch {
		case errors.Is(err, bank.ErrInsufficientFunds):
			fmt.Fprintf(out, "transfer %d from bank/north/ada to %s: refused (%v)\n", t.Amount, t.To, err)
		case err != nil:
			return err
		default:
			fmt.Fprintf(out, "transfer %d from bank/north/ada to %s: accepted\n", t.Amount, t.To)
		}
	}
	if err := drain(ctx, sys, accounts); err != nil {
		return err
	}
	for _, a := range accounts {
		v, err := sys.Request(ctx, a, bank.Audit{})
		if err != nil {
			return err
		}
		au := v.(bank.AccountAudit)
		fmt.Fprintf(out, "%-16s balance %4d  transfers out: %d done, %d failed\n", a, au.Balance, au.Done, au.Failed)
	}
	for _, b := range []string{"bank/north", "bank/south"} {
		v, err := sys.Request(ctx, b, bank.Audit{})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%-16s total   %4d  (kept from its accounts' events)\n", b, v.(int64))
	}
	r, err := bank.Check(ctx, sys, accounts, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, r)
	if len(r.Anomalies) > 0 {
		return errors.New("the audit found anomalies")
	}
	return nil
}

// drain waits until every account has delivered every durable message.
func drain(ctx context.Context, sys *actors.System, accounts []string) error {
	for {
		left := 0
		for _, a := range accounts {
			n, err := sys.Undelivered(ctx, a)
			if err != nil {
				return err
			}
			left += n
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d durable messages still undelivered: %w", left, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// maxConcurrent bounds the requests served at once in -serve mode.
const maxConcurrent = 64

func serveLines(dir string, in io.Reader, out io.Writer, logger *slog.Logger) error {
	sys, err := open(dir, logger)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	say("READY")
	sem := make(chan struct{}, maxConcurrent)
	var wg sync.WaitGroup
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			serveLine(sys, f, say)
		}()
	}
	wg.Wait()
	return errors.Join(sc.Err(), sys.Close(context.Background()))
}

func serveLine(sys *actors.System, f []string, say func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad := func(id string) { say("ERR %s malformed request %q", id, strings.Join(f, " ")) }
	switch {
	case f[0] == "D" && len(f) == 4:
		amount, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			bad(f[1])
			return
		}
		if _, err := sys.Request(ctx, f[2], bank.Deposit{ID: f[1], Amount: amount}); err != nil {
			say("ERR %s %v", f[1], err)
			return
		}
		say("OK %s", f[1])
	case f[0] == "T" && len(f) == 5:
		amount, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil {
			bad(f[1])
			return
		}
		_, err = sys.Request(ctx, f[2], bank.Transfer{ID: f[1], To: f[3], Amount: amount})
		switch {
		case errors.Is(err, bank.ErrInsufficientFunds):
			say("NO %s", f[1])
		case err != nil:
			say("ERR %s %v", f[1], err)
		default:
			say("OK %s", f[1])
		}
	case f[0] == "F" && len(f) == 3:
		if _, err := sys.Request(ctx, f[1], bank.Freeze{Frozen: f[2] == "1"}); err != nil {
			say("ERR %s %v", f[1], err)
			return
		}
		say("OK %s", f[1])
	default:
		bad("-")
	}
}
