package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/examples/bank/bank"
)

// The crash test runs the bank in a child process (this test binary,
// re-executed in -serve mode), drives transfers into it, kills it with
// SIGKILL at a random moment, restarts it, and repeats; then it audits the
// bank. `make bank-crash` runs it with -bank.cycles=100.
var cycles = flag.Int("bank.cycles", 8, "kill -9 cycles of TestCrashKill9")

const serveEnv = "FRACTAL_BANK_SERVE_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		if err := serveLines(dir, os.Stdin, os.Stdout, slog.New(slog.DiscardHandler)); err != nil {
			fmt.Fprintln(os.Stderr, "bank:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestDemo(t *testing.T) {
	var out strings.Builder
	if err := demo(t.TempDir(), &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"bank/north/ada   balance   50", "bank/north       total    180", "anomalies=0"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestCrashKill9(t *testing.T) {
	dir := t.TempDir()
	var accounts []string
	for _, b := range []string{"east", "west", "south"} {
		for i := range 8 {
			accounts = append(accounts, fmt.Sprintf("bank/%s/acct%d", b, i))
		}
	}
	frozen := accounts[len(accounts)-1] // its credits are refused: those transfers are refunded

	// Set-up, not killed: every account gets 1,000.
	child := startBank(t, dir)
	for i, a := range accounts {
		child.send("D dep%d %s 1000", i, a)
	}
	child.send("F %s 1", frozen)
	for range len(accounts) + 1 {
		if l := child.next(t); !strings.HasPrefix(l, "OK ") {
			t.Fatalf("set-up: %s", l)
		}
	}
	child.stop(t)

	var acknowledged []string
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	seq := 0
	for cycle := range *cycles {
		child := startBank(t, dir)
		// Killed at a random moment once it has answered once: the
		// machine may be slow to start a process, and a kill before any
		// answer proves little.
		var killer *time.Timer
		delay := time.Duration(rng.IntN(300)) * time.Millisecond
		var mu sync.Mutex
		var acks []string
		var answered atomic.Int64
		progress := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() { // read answers until the child dies
			defer close(done)
			for l := range child.lines {
				answered.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
				if id, ok := strings.CutPrefix(l, "OK "); ok {
					mu.Lock()
					acks = append(acks, id)
					if killer == nil {
						killer = time.AfterFunc(delay, child.kill9)
					}
					mu.Unlock()
				}
			}
		}()
		fallback := time.AfterFunc(30*time.Second, child.kill9) // it never answered
		sent := int64(0)
		for {
			from, to := accounts[rng.IntN(len(accounts))], accounts[rng.IntN(len(accounts))]
			if rng.IntN(8) == 0 {
				to = frozen // refused by the target: refunded to the source
			}
			if from == to {
				continue
			}
			seq++
			if !child.send("T t%d-%d %s %s %d", cycle, seq, from, to, 1+rng.IntN(50)) {
				break
			}
			sent++
			// At most 64 transfers unanswered: each command gets one
			// answer line, until the child dies.
			for sent-answered.Load() > 64 {
				select {
				case <-progress:
					continue
				case <-done:
				}
				break
			}
		}
		fallback.Stop()
		child.kill9()
		<-done
		mu.Lock()
		acknowledged = append(acknowledged, acks...)
		mu.Unlock()
	}

	// Restart in this process; let every durable message arrive; audit.
	h := actortest.Open(t, dir, actors.Options{Kinds: bank.Kinds()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := drain(ctx, h.System(), accounts); err != nil {
		t.Fatal(err)
	}
	r, err := bank.Check(ctx, h.System(), accounts, acknowledged)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	fmt.Printf("cycles=%d acknowledged=%d anomalies=%d\n", *cycles, len(acknowledged), len(r.Anomalies))
	if len(r.Anomalies) > 0 || r.Pending > 0 {
		t.Fatalf("the bank is inconsistent after %d kill -9 cycles: %s", *cycles, r)
	}
	if len(acknowledged) == 0 || r.Failed == 0 || r.Done == 0 {
		t.Fatalf("the load did too little to prove anything: %d acknowledged, %s", len(acknowledged), r)
	}
	// actortest checks every file's integrity when the test ends.
}

// A bankProcess is the bank served by a child process.
type bankProcess struct {
	once  sync.Once
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func startBank(t *testing.T, dir string) *bankProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+dir)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &bankProcess{cmd: cmd, in: in, lines: make(chan string, 1024)}
	t.Cleanup(func() { p.kill9() })
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	if l := p.next(t); l != "READY" {
		t.Fatalf("bank process said %q", l)
	}
	return p
}

func (p *bankProcess) send(format string, args ...any) bool {
	_, err := fmt.Fprintf(p.in, format+"\n", args...)
	return err == nil
}

func (p *bankProcess) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("bank process exited")
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatal("bank process silent for 30 s")
	}
	return ""
}

// stop closes the input: the process finishes what it accepted and exits.
func (p *bankProcess) stop(t *testing.T) {
	t.Helper()
	p.in.Close()
	var err error
	p.once.Do(func() { err = p.cmd.Wait() })
	if err != nil {
		t.Fatalf("bank process: %v", err)
	}
}

func (p *bankProcess) kill9() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill() // SIGKILL
		_ = p.cmd.Wait()
	})
}
