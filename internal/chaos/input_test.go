package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
)

type strictAdd struct{ N int }

// TestUnknownMessages sends messages a part does not know (another type,
// nil, a huge value) to a handler that answers them with ErrUnknownMessage
// and to one that assumes its type and panics. Either way the caller gets
// an error, not a crash: the part's state is unchanged, the panicking part
// is restarted by its parent, its siblings serve, and the outcomes are
// counted.
func TestUnknownMessages(t *testing.T) {
	ctx := context.Background()
	polite := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		m, ok := msg.(strictAdd)
		if !ok {
			return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
		}
		var n int
		err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, m.N).Scan(&n)
		return n, err
	})
	careless := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		if _, err := c.Exec(`UPDATE counter SET n = n + 1000`); err != nil { // rolled back by the panic below
			return nil, err
		}
		m := msg.(strictAdd) // panics on anything else
		var n int
		err := c.QueryRow(`UPDATE counter SET n = n - 1000 + ? RETURNING n`, m.N).Scan(&n)
		return n, err
	})
	reg := prometheus.NewRegistry()
	sys, err := actors.Open(ctx, t.TempDir(), actors.Options{Registerer: reg, Kinds: []actors.Kind{
		{Name: "top", Pattern: "u", Migrations: faultMigrations, Handler: polite},
		{Name: "polite", Pattern: "u/polite/*", Migrations: faultMigrations, Handler: polite},
		{Name: "politeGroup", Pattern: "u/polite", Migrations: faultMigrations, Handler: polite},
		{Name: "careless", Pattern: "u/careless/*", Migrations: faultMigrations, Handler: careless},
		{Name: "carelessGroup", Pattern: "u/careless", Migrations: faultMigrations, Handler: polite},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(ctx)
	for _, p := range []string{"u/polite/a", "u/careless/a", "u/careless/b"} {
		if v, err := sys.Request(ctx, p, strictAdd{1}); err != nil || v != 1 {
			t.Fatalf("%s: %v %v", p, v, err)
		}
	}
	unknown := []any{nil, "a string", 42, struct{ X []int }{}, &strictAdd{1}, make([]byte, 64<<20)}
	for _, msg := range unknown {
		what := fmt.Sprintf("%T", msg)
		if _, err := sys.Request(ctx, "u/polite/a", msg); !errors.Is(err, actors.ErrUnknownMessage) {
			t.Errorf("polite handler, %s: %v; want ErrUnknownMessage", what, err)
		}
		_, err := sys.Request(ctx, "u/careless/a", msg)
		var pe *actors.PanicError
		if !errors.Is(err, actors.ErrPanic) || !errors.As(err, &pe) || pe.Path.String() != "u/careless/a" {
			t.Errorf("careless handler, %s: %v; want a *PanicError naming the part", what, err)
		}
		if err := sys.Send("u/polite/a", msg); err != nil {
			t.Errorf("send %s: %v", what, err)
		}
	}
	// Unchanged, still serving, and the siblings too.
	for _, p := range []string{"u/polite/a", "u/careless/a", "u/careless/b"} {
		if v, err := sys.Request(ctx, p, strictAdd{1}); err != nil || v != 2 {
			t.Errorf("%s after unknown messages: %v, %v; want 2", p, v, err)
		}
	}
	if got := counterValue(t, reg, "fractal_messages_total", "kind", "polite", "outcome", "error"); got != float64(2*len(unknown)) {
		t.Errorf("polite errors counted: %v, want %d (requests and sends)", got, 2*len(unknown))
	}
	if got := counterValue(t, reg, "fractal_messages_total", "kind", "careless", "outcome", "panic"); got < float64(len(unknown)) {
		t.Errorf("careless panics counted: %v, want at least %d", got, len(unknown))
	}
}

// TestPathsStayInside sends requests to hostile paths on a tree whose
// levels accept any name, and checks that whatever was accepted was
// created inside the data directory, at the place its path encodes, and
// that nothing at all appeared beside the data directory. (The fuzz tests
// FuzzParsePath, FuzzSegmentEncoding and FuzzResolve in package actors
// check the same of any input.)
func TestPathsStayInside(t *testing.T) {
	ctx := context.Background()
	sandbox := t.TempDir()
	dir := filepath.Join(sandbox, "data")
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		_, err := c.Exec(`UPDATE counter SET n = n + 1`)
		return c.Path().String(), err
	})
	sys, err := actors.Open(ctx, dir, actors.Options{Kinds: []actors.Kind{
		{Name: "one", Pattern: "*", Migrations: faultMigrations, Handler: h},
		{Name: "two", Pattern: "*/*", Migrations: faultMigrations, Handler: h},
	}})
	if err != nil {
		t.Fatal(err)
	}
	hostile := []string{
		"..", "../x", "x/..", "x/../..", "../../etc/passwd", "/etc", "/", "", "x//y", "x/", ".", "./x",
		`..\..\x`, `x\..\..\y`, "%2e%2e", "%2e%2e/%2e%2e", "...", "....", "x/...",
		"_fractal.db", "_fractal.lock", "_part.db", "x/_part.db", "x/_fractal_children",
		"CON", "nul", "aux.txt", "C:", "c:/x", "x\x00y", "\x00", "x/\x00", "\ufeff", "e\u0301", "\u00e9", "Ǆ", "ǅ", "ǆ",
		"a:b", "a*b", "a?b", "a|b", "a<b>", "\t", " ", "x ", " x", "\n", "\x7f", "\xff\xfe", strings.Repeat("a", 255),
		strings.Repeat("a", 256), strings.Repeat("é", 128), strings.Repeat("x/", 40) + "x",
	}
	accepted := 0
	want := map[string]bool{} // the accepted paths and their parents
	for _, p := range hostile {
		v, err := sys.Request(ctx, p, nil)
		if err != nil {
			if !errors.Is(err, actors.ErrInvalidPath) && !errors.Is(err, actors.ErrNoKind) {
				t.Errorf("%q: %v; want ErrInvalidPath or ErrNoKind", p, err)
			}
			continue
		}
		accepted++
		for q := actors.MustParsePath(p); !q.IsRoot(); q = q.Parent() {
			want[q.String()] = true
		}
		file := actors.MustParsePath(p).File(dir)
		rel, err := filepath.Rel(dir, file)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
			t.Errorf("%q: file %s is outside %s", p, file, dir)
		}
		if back, err := actors.PathFromDir(dir, filepath.Dir(file)); err != nil || back.String() != v {
			t.Errorf("%q: its directory maps back to %q, %v", p, back, err)
		}
		if _, err := os.Stat(file); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	if err := sys.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(sandbox); len(entries) != 1 {
		t.Errorf("beside the data directory: %v", entries)
	}
	parts, _ := partFiles(t, dir)
	for p := range parts {
		if !want[p] {
			t.Errorf("a part file for %q, which was not requested", p)
		}
	}
	if len(parts) != len(want) {
		t.Errorf("%d part files for %d parts", len(parts), len(want))
	}
	t.Logf("%d hostile paths: %d refused, %d accepted, each inside the data directory", len(hostile), len(hostile)-accepted, accepted)
}
