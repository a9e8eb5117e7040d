package actors

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// A Handler handles the messages sent to a part. Handle runs inside a
// transaction on the part's file: everything it writes through c commits
// together with the reply, or not at all. The returned reply reaches the
// caller only after that commit (the output gate). A returned error rolls the
// message's writes back and reaches the caller as the error of Request.
//
// A part handles one message at a time, on its own goroutine.
type Handler interface {
	Handle(c *Context, msg any) (reply any, err error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(c *Context, msg any) (any, error)

// Handle calls f(c, msg).
func (f HandlerFunc) Handle(c *Context, msg any) (any, error) { return f(c, msg) }

// An Activator is a Handler that wants to load state when its part is
// activated. Activate runs in a transaction on the part's file after the
// file is opened and migrated, at every activation and after every restart,
// so in-memory state is always rebuilt from what is on disk. An error from
// Activate fails the activation: the messages waiting for the part receive
// it, wrapped in ErrActivation.
type Activator interface {
	Activate(c *Context) error
}

// A Kind declares one level of the tree: the parts whose paths match Pattern,
// the schema of their files, and the code that handles their messages.
//
// The kinds given to Open are the tree's shape as data. Open validates them:
// every pattern's parent level must be declared too, so that the path tree
// and the supervision tree are the same tree.
type Kind struct {
	// Name identifies the kind in logs and in metric labels (kind). It must
	// be a short identifier: letters, digits and underscores.
	Name string

	// Pattern is a path whose segments are literal names or "*", which
	// matches any one segment: "mail", "mail/*", "mail/*/*".
	Pattern string

	// Migrations is the ordered schema of the kind's files, applied when a
	// part is activated (see persistence.Migration). A file whose schema is
	// newer than the code is refused and left untouched. Their version is
	// PRAGMA user_version; PRAGMA application_id is the runtime's (see "The
	// runtime's tables" in the package documentation), and table names
	// starting with _fractal_ are too.
	Migrations []persistence.Migration

	// Handler handles the messages of every part of this kind. It is called
	// from many parts' goroutines at once, so it must keep no per-part state
	// outside the part's file. Set either Handler or New.
	Handler Handler

	// Supervision is how parts of this kind supervise their children:
	// strategy, restart intensity and backoff (see package supervisor).
	// The zero value means DefaultSupervision.
	Supervision supervisor.Spec

	// Restart says whether a part of this kind is restarted by its parent
	// after it exits (OTP's restart types). After its handler panicked:
	// supervisor.Permanent (the zero value) and supervisor.Transient are,
	// supervisor.Temporary is not (it is stopped, and activated again by
	// its next message). After a normal exit (Context.Stop): only
	// supervisor.Permanent is; the others stop until their next message.
	Restart supervisor.RestartType

	// IdleTimeout is how long a part of this kind stays active without a
	// message before it is passivated: its file closed, its actor stopped,
	// nothing left of it in memory; its next message activates it again.
	// Zero means DefaultIdleTimeout; a negative value means never for
	// idleness (the cap on active parts, Options.MaxActiveParts, still
	// applies). A part with active children is not passivated.
	IdleTimeout time.Duration

	// New returns the handler for one activation of the part at path. It is
	// called at each activation and after each restart, so a handler that
	// keeps in-memory state (loaded by an Activator) starts from the file.
	// Set either Handler or New.
	New func(path Path) Handler
}

var kindNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// String returns the kind as one line: name, pattern, schema version,
// restart type, and how it supervises its children.
func (k Kind) String() string {
	sup := "default supervision"
	if k.Supervision != (supervisor.Spec{}) {
		sup = k.Supervision.String()
	}
	return fmt.Sprintf("%s %s (%d migrations, %s, children: %s)", k.Name, k.Pattern, len(k.Migrations), k.Restart, sup)
}

func (k Kind) handler(p Path) Handler {
	if k.New != nil {
		return k.New(p)
	}
	return k.Handler
}

// tree is the validated set of kinds, indexed by depth for matching.
type tree struct {
	kinds   []*kindSpec
	byDepth map[int][]*kindSpec
}

type kindSpec struct {
	Kind
	segs []string     // pattern segments; "*" matches any
	m    *kindMetrics // nil without Options.Registerer
}

func (k *kindSpec) matches(p Path) bool {
	rest := p.String()
	for i, want := range k.segs {
		seg, tail, more := strings.Cut(rest, "/")
		if want != "*" && want != seg {
			return false
		}
		if more != (i < len(k.segs)-1) {
			return false // p is longer or shorter than the pattern
		}
		rest = tail
	}
	return true
}

// overlaps reports whether some path matches both patterns of equal depth.
func (k *kindSpec) overlaps(o *kindSpec) bool {
	if len(k.segs) != len(o.segs) {
		return false
	}
	for i := range k.segs {
		if k.segs[i] != "*" && o.segs[i] != "*" && k.segs[i] != o.segs[i] {
			return false
		}
	}
	return true
}

func treeError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidTree, fmt.Sprintf(format, args...))
}

func newTree(kinds []Kind) (*tree, error) {
	t := &tree{byDepth: make(map[int][]*kindSpec)}
	names := make(map[string]bool)
	for i, k := range kinds {
		if !kindNameRE.MatchString(k.Name) {
			return nil, treeError("kind %d: name %q must be a letter followed by up to 63 letters, digits or underscores", i, k.Name)
		}
		if names[k.Name] {
			return nil, treeError("kind %q is declared twice", k.Name)
		}
		names[k.Name] = true
		if (k.Handler == nil) == (k.New == nil) {
			return nil, treeError("kind %q: set exactly one of Handler and New", k.Name)
		}
		if k.Supervision != (supervisor.Spec{}) {
			if err := k.Supervision.Validate(); err != nil {
				return nil, treeError("kind %q: supervision: %v", k.Name, err)
			}
		}
		if _, err := supervisor.ParseRestartType(k.Restart.String()); err != nil {
			return nil, treeError("kind %q: %v", k.Name, err)
		}
		if k.Pattern == "" {
			return nil, treeError("kind %q: empty pattern", k.Name)
		}
		segs := strings.Split(k.Pattern, "/")
		for j, s := range segs {
			if s == "*" {
				continue
			}
			if _, err := ParsePath(s); err != nil {
				return nil, treeError("kind %q: pattern %q, segment %d: %v", k.Name, k.Pattern, j+1, err)
			}
		}
		ks := &kindSpec{Kind: k, segs: segs}
		for _, o := range t.byDepth[len(segs)] {
			if ks.overlaps(o) {
				return nil, treeError("kinds %q (%s) and %q (%s) both match some paths", o.Name, o.Pattern, k.Name, k.Pattern)
			}
		}
		t.kinds = append(t.kinds, ks)
		t.byDepth[len(segs)] = append(t.byDepth[len(segs)], ks)
	}
	// Every level's parent level must be declared: a part is activated and
	// supervised by its parent, so a path whose parent has no kind could
	// never be reached.
	for _, k := range t.kinds {
		if len(k.segs) == 1 {
			continue
		}
		parent := &kindSpec{segs: k.segs[:len(k.segs)-1]}
		covered := false
		for _, o := range t.byDepth[len(parent.segs)] {
			if covers(o.segs, parent.segs) {
				covered = true
				break
			}
		}
		if !covered {
			return nil, treeError("kind %q (%s): no kind declared for its parent level %s", k.Name, k.Pattern, strings.Join(parent.segs, "/"))
		}
	}
	return t, nil
}

// covers reports whether pattern a matches every path that pattern b matches.
func covers(a, b []string) bool {
	for i := range a {
		if a[i] != "*" && a[i] != b[i] {
			return false
		}
	}
	return true
}

// match returns the kind of the part at p, or an error wrapping ErrNoKind.
func (t *tree) match(p Path) (*kindSpec, error) {
	for _, k := range t.byDepth[p.Depth()] {
		if k.matches(p) {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoKind, p.String())
}

// String prints the tree, one kind per line, in declaration order.
func (t *tree) String() string {
	var b strings.Builder
	for _, k := range t.kinds {
		fmt.Fprintf(&b, "%s%s\n", strings.Repeat("  ", len(k.segs)-1), k.Kind)
	}
	return b.String()
}
