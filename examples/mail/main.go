// Command mail is fractal's flagship example: a mail system in which the
// whole routes between domains, each domain routes between its mailboxes,
// and each mailbox keeps its own mail in its own SQLite file, indexed for
// full-text search (SQLite FTS5). A search everywhere asks every mailbox of
// a domain, or of the whole, at once (actors.System.Scatter), each one
// searching its own index.
//
//	go run ./examples/mail -data DIR
//
// runs a scripted demo, prints what happened, and exits 0, leaving one
// SQLite file per part under DIR.
//
//	go run ./examples/mail -data DIR -metrics 127.0.0.1:9464 -serve
//
// also serves the runtime's Prometheus metrics (and the Go and process
// collectors) at http://127.0.0.1:9464/metrics, and with -serve keeps the
// system open after the demo until SIGINT or SIGTERM, then closes it.
// -metrics accepts loopback addresses only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/inspect"
)

func main() {
	data := flag.String("data", filepath.Join("data", "mail"), "data directory (created if missing)")
	verbose := flag.Bool("v", false, "log the runtime's events to stderr")
	metricsAddr := flag.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (a loopback address, e.g. 127.0.0.1:9464; default: off)")
	serve := flag.Bool("serve", false, "after the demo, keep the system open until SIGINT or SIGTERM")
	inspectAddr := flag.String("inspect", "", "with -serve, serve the live view of the tree at http://ADDR/ (a loopback address, e.g. 127.0.0.1:8080; default: off)")
	flag.Parse()
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if *inspectAddr != "" && !*serve {
		fmt.Fprintln(os.Stderr, "mail: -inspect needs -serve")
		os.Exit(2)
	}
	if err := runMain(*data, *metricsAddr, *inspectAddr, *serve, logger); err != nil {
		fmt.Fprintln(os.Stderr, "mail:", err)
		os.Exit(1)
	}
}

func runMain(data, metricsAddr, inspectAddr string, serve bool, logger *slog.Logger) error {
	var reg *prometheus.Registry
	if metricsAddr != "" {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		srv, err := actors.ServeMetrics(metricsAddr, reg)
		if err != nil {
			return err
		}
		defer srv.Close(context.Background())
		fmt.Printf("metrics: http://%s/metrics\n", srv.Addr())
	}
	var hold func(*actors.System) error
	if serve {
		hold = func(sys *actors.System) error {
			if inspectAddr != "" {
				srv, err := serveInspect(inspectAddr, sys)
				if err != nil {
					return err
				}
				defer srv.Close()
				fmt.Printf("inspect: http://%s/\n", srv.Addr)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Println("\nserving until SIGINT or SIGTERM")
			<-ctx.Done()
			fmt.Println("closing")
			return nil
		}
	}
	var r prometheus.Registerer
	if reg != nil {
		r = reg
	}
	return run(context.Background(), os.Stdout, data, logger, r, hold)
}

// run runs the demo on dir. reg, when not nil, receives the runtime's
// metrics; hold, when not nil, is called after the demo while the system
// is still open, and the system is closed when it returns.
func run(ctx context.Context, w io.Writer, dir string, logger *slog.Logger, reg prometheus.Registerer, hold func(*actors.System) error) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	opts := actors.Options{Kinds: kinds(), Logger: logger, Registerer: reg}
	sys, err := actors.Open(ctx, dir, opts)
	if err != nil {
		return err
	}
	defer sys.Close(ctx)
	fmt.Fprintf(w, "fractal mail: data directory %s\n\nthe tree:\n%s\n", sys.Dir(), sys.Tree())

	step := func(format string, args ...any) { fmt.Fprintf(w, "- "+format+"\n", args...) }

	// Accounts live in their domain's file.
	for _, a := range []string{"alice@example.org", "bob@example.org", "carol@example.net"} {
		domain, _ := domainOf(a)
		if _, err := sys.Request(ctx, "mail/"+domain, Register{Address: a}); err != nil {
			return err
		}
		step("registered %s in mail/%s", a, domain)
	}

	// Within a domain: alice -> example.org -> bob. The reply (the id) is
	// released only after alice's file has committed the message.
	id1, err := sys.Request(ctx, "mail/example.org/alice@example.org",
		Submit{To: "bob@example.org", Subject: "lunch?", Body: "Noon at the usual place."})
	if err != nil {
		return err
	}
	step("alice -> bob: %s committed in alice's file; it travels alice -> mail/example.org -> bob", id1)

	// Across domains: alice -> example.org -> mail -> example.net -> carol.
	id2, err := sys.Request(ctx, "mail/example.org/alice@example.org",
		Submit{To: "carol@example.net", Subject: "hello", Body: "Greetings from example.org."})
	if err != nil {
		return err
	}
	step("alice -> carol: %s crosses domains: alice -> mail/example.org -> mail -> mail/example.net -> carol", id2)

	// To an unknown account: the domain bounces it back.
	id3, err := sys.Request(ctx, "mail/example.net/carol@example.net",
		Submit{To: "nobody@example.org", Subject: "anyone?", Body: "Is this thing on?"})
	if err != nil {
		return err
	}
	step("carol -> nobody@example.org: %s will bounce", id3)

	if err := waitFor(ctx, func() (bool, error) {
		bob, err := inbox(ctx, sys, "mail/example.org/bob@example.org")
		if err != nil {
			return false, err
		}
		carol, err := inbox(ctx, sys, "mail/example.net/carol@example.net")
		if err != nil {
			return false, err
		}
		sent, err := sys.Request(ctx, "mail/example.net/carol@example.net", ListSent{})
		if err != nil {
			return false, err
		}
		bounced := slices.ContainsFunc(sent.([]Sent), func(s Sent) bool { return s.ID == id3 && s.Bounced != "" })
		return hasID(bob, id1.(string)) && hasID(carol, id2.(string)) && bounced, nil
	}); err != nil {
		return fmt.Errorf("waiting for deliveries: %w", err)
	}
	step("delivered: bob has %s, carol has %s, carol's %s bounced", id1, id2, id3)

	// A few more letters, for the search below.
	more := []struct{ from, to, subject, body string }{
		{"bob@example.org", "alice@example.org", "re: lunch?", "Noon works. Shall we try the new noodle bar?"},
		{"carol@example.net", "bob@example.org", "noodle recipe", "Simmer the broth for six hours, then add the noodles."},
		{"alice@example.org", "carol@example.net", "conference", "The slides are attached. Lunch is provided on both days."},
		{"carol@example.net", "alice@example.org", "Café Zoë", "Meet me at Café Zoë, by the station."},
	}
	var sentIDs []string
	for _, m := range more {
		from, err := mailboxPath(m.from)
		if err != nil {
			return err
		}
		id, err := sys.Request(ctx, from, Submit{To: m.to, Subject: m.subject, Body: m.body})
		if err != nil {
			return err
		}
		sentIDs = append(sentIDs, id.(string))
	}
	if err := waitFor(ctx, func() (bool, error) {
		for i, m := range more {
			to, err := mailboxPath(m.to)
			if err != nil {
				return false, err
			}
			letters, err := inbox(ctx, sys, to)
			if err != nil || !hasID(letters, sentIDs[i]) {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return fmt.Errorf("waiting for deliveries: %w", err)
	}
	step("delivered %d more letters: %v", len(more), sentIDs)

	// Bad input changes nothing.
	_, err = sys.Request(ctx, "../../etc/passwd", List{})
	step("request to ../../etc/passwd: %v (invalid path: %t)", err, errors.Is(err, actors.ErrInvalidPath))
	_, err = sys.Request(ctx, "mail/example.org/bob@example.org", Submit{To: "not an address"})
	step("submit to \"not an address\": %v (rolled back, nothing sent)", err)
	_, err = sys.Request(ctx, "mail/example.org/bob@example.org", "hello?")
	step("a string message: %v (unknown type: %t)", err, errors.Is(err, actors.ErrUnknownMessage))

	// Close, reopen: every part comes back with its state.
	if err := sys.Close(ctx); err != nil {
		return err
	}
	sys, err = actors.Open(ctx, dir, opts)
	if err != nil {
		return err
	}
	defer sys.Close(ctx)
	bob, err := inbox(ctx, sys, "mail/example.org/bob@example.org")
	if err != nil {
		return err
	}
	step("after close and reopen, bob's inbox holds %d letter(s):", len(bob))
	for _, l := range bob {
		fmt.Fprintf(w, "    %s from %s: %q\n", l.ID, l.From, l.Subject)
	}

	// Search everywhere: every mailbox of a domain, then every mailbox of
	// the whole, each searching its own file's index at once. The
	// mailboxes are found in their parents' files, without activating
	// any other part; each answers, or reports its own error.
	for _, s := range []struct{ pattern, query string }{
		{"mail/example.org/*", "noodle*"},
		{"mail/*/*", "lunch"},
		{"mail/*/*", "cafe"},
	} {
		if err := searchEverywhere(ctx, w, sys, s.pattern, s.query); err != nil {
			return err
		}
	}
	if hold != nil {
		if err := hold(sys); err != nil {
			return err
		}
	}
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelClose()
	if err := sys.Close(closeCtx); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nfiles (one SQLite file per part):\n")
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != actors.PartFileName {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(w, "    %s\n", rel)
		return nil
	})
}

// searchEverywhere sends Search{query} to every mailbox matching pattern
// and prints the hits per mailbox, and each mailbox's error if it has one.
// A search with no mailbox to ask is an error.
func searchEverywhere(ctx context.Context, w io.Writer, sys *actors.System, pattern, query string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var results []actors.ScatterResult
	hits := 0
	for r := range sys.Scatter(ctx, pattern, Search{Query: query}, nil) {
		results = append(results, r)
		if h, ok := r.Reply.([]Hit); ok && r.Err == nil {
			hits += len(h)
		}
	}
	if len(results) == 0 {
		return fmt.Errorf("search %q across %s: no mailbox found", query, pattern)
	}
	// Results arrive in any order; print them by mailbox.
	slices.SortFunc(results, func(a, b actors.ScatterResult) int { return strings.Compare(a.Path.String(), b.Path.String()) })
	fmt.Fprintf(w, "- search %q across %s: %d hit(s) in %d mailbox(es) asked:\n", query, pattern, hits, len(results))
	for _, r := range results {
		if r.Err != nil {
			fmt.Fprintf(w, "    %s: error: %v\n", r.Path, r.Err)
			continue
		}
		found, _ := r.Reply.([]Hit)
		fmt.Fprintf(w, "    %s: %d hit(s)\n", r.Path, len(found))
		for _, h := range found {
			fmt.Fprintf(w, "        %s from %s: %s\n", h.ID, h.From, h.Snippet)
		}
	}
	return nil
}

// mailboxPath returns the path of the mailbox of an address.
func mailboxPath(addr string) (string, error) {
	domain, err := domainOf(addr)
	if err != nil {
		return "", err
	}
	return "mail/" + domain + "/" + addr, nil
}

func inbox(ctx context.Context, sys *actors.System, path string) ([]Letter, error) {
	r, err := sys.Request(ctx, path, List{})
	if err != nil {
		return nil, err
	}
	return r.([]Letter), nil
}

func hasID(ls []Letter, id string) bool {
	return slices.ContainsFunc(ls, func(l Letter) bool { return l.ID == id })
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() (bool, error)) error {
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		ok, err := cond()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// serveInspect serves the inspection page of sys on addr, a loopback
// address (read-only: no action is enabled).
func serveInspect(addr string, sys *actors.System) (*http.Server, error) {
	ln, err := actors.ListenLoopback(addr)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	srv := &http.Server{Addr: ln.Addr().String(), Handler: inspect.Handler(sys, nil), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
