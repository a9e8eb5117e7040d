package actors

import (
	"errors"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// seedPaths are shared seed inputs for the fuzz targets.
var seedPaths = []string{
	"",
	"/",
	"mail",
	"mail/example.org/alice@example.org",
	"mail/Example.org/Alice.Smith+tag@Example.org",
	"people/Zoë",
	"日本/東京",
	"with space/100%/%41/%2e",
	"_part.db",
	"mail/_part.db",
	".hidden/dot./...",
	"../../etc/passwd",
	"/etc/passwd",
	"mail/../x",
	"mail/./x",
	"a//b",
	"mail/",
	".",
	"..",
	"./x",
	"a/\xff",
	"a\x00b",
	"CON/nul",
	strings.Repeat("a", 255),
	strings.Repeat("a", 256),
	strings.Repeat("A", 85),
	strings.Repeat("A", 86),
	strings.Repeat("A", 100),
}

// fuzzBases are data directories used to check Dir, File and PathFromDir.
var fuzzBases = []string{filepath.FromSlash("/srv/fractal/data"), "data", ""}

// checkPathError verifies that err is a *PathError wrapping ErrInvalidPath.
func checkPathError(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidPath) {
		t.Fatalf("%s: error %v does not wrap ErrInvalidPath", what, err)
	}
	var pe *PathError
	if !errors.As(err, &pe) || pe.Reason == "" {
		t.Fatalf("%s: error %v (%T) is not a *PathError with a reason", what, err, err)
	}
	if !strings.HasPrefix(err.Error(), "actors: invalid path ") {
		t.Fatalf("%s: unexpected message %q", what, err.Error())
	}
}

// checkInside verifies that target lies strictly below base (or equals it
// when allowSelf) and returns the components of the relative path.
func checkInside(t *testing.T, base, target string, allowSelf bool) []string {
	t.Helper()
	rel, err := filepath.Rel(base, target)
	if err != nil {
		t.Fatalf("filepath.Rel(%q, %q): %v", base, target, err)
	}
	if filepath.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		t.Fatalf("%q is outside %q (rel %q)", target, base, rel)
	}
	if rel == "." {
		if !allowSelf {
			t.Fatalf("%q is %q itself", target, base)
		}
		return nil
	}
	return strings.Split(rel, string(filepath.Separator))
}

// checkValidPath verifies the invariants of a path returned by the package.
func checkValidPath(t *testing.T, p Path) {
	t.Helper()
	segs := p.Segments()
	if p.IsRoot() {
		if p.String() != "" || p.Depth() != 0 || segs != nil || p.Name() != "" || p.Parent() != p {
			t.Fatalf("inconsistent root %q", p)
		}
	} else {
		q, err := ParsePath(p.String())
		if err != nil || q != p {
			t.Fatalf("ParsePath(%q) = %q, %v: no round trip", p, q, err)
		}
		if strings.Join(segs, "/") != p.String() || len(segs) != p.Depth() || segs[len(segs)-1] != p.Name() {
			t.Fatalf("inconsistent segments %q of %q (depth %d)", segs, p, p.Depth())
		}
		parent := p.Parent()
		if c, err := parent.Child(p.Name()); err != nil || c != p {
			t.Fatalf("%q.Parent().Child(Name) = %q, %v", p, c, err)
		}
		if p.Ancestor(p.Depth()-1) != parent || !parent.IsAncestorOf(p) || p.IsAncestorOf(parent) ||
			!p.Contains(p) || p.IsAncestorOf(p) || CommonAncestor(p, parent) != parent || CommonAncestor(parent, p) != parent {
			t.Fatalf("inconsistent ancestry of %q and parent %q", p, parent)
		}
	}
	for _, base := range fuzzBases {
		dir := p.Dir(base)
		names := checkInside(t, base, dir, p.IsRoot())
		if len(names) != len(segs) {
			t.Fatalf("Dir(%q) of %q = %q has %d components, want %d", base, p, dir, len(names), len(segs))
		}
		for i, name := range names {
			seg, err := DecodeSegment(name)
			if err != nil || seg != segs[i] {
				t.Fatalf("component %q of %q decodes to %q, %v; want %q", name, dir, seg, err, segs[i])
			}
			if EncodeSegment(seg) != name {
				t.Fatalf("component %q is not canonical", name)
			}
		}
		back, err := PathFromDir(base, dir)
		if err != nil || back != p {
			t.Fatalf("PathFromDir(%q, %q) = %q, %v; want %q", base, dir, back, err, p)
		}
		file := p.File(base)
		if p.IsRoot() {
			if file != "" {
				t.Fatalf("root.File(%q) = %q", base, file)
			}
			continue
		}
		checkInside(t, base, file, false)
		if filepath.Dir(file) != dir || filepath.Base(file) != PartFileName {
			t.Fatalf("File(%q) of %q = %q, not %q in %q", base, p, file, PartFileName, dir)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range seedPaths {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		// Oracle: valid exactly when every '/'-separated piece is a valid
		// segment on its own.
		valid := true
		for _, seg := range strings.Split(s, "/") {
			if _, err := (Path{}).Child(seg); err != nil {
				valid = false
			}
		}
		if err != nil {
			checkPathError(t, "ParsePath", err)
			if valid {
				t.Fatalf("ParsePath(%q) rejected a path of valid segments: %v", s, err)
			}
			if p != (Path{}) {
				t.Fatalf("ParsePath(%q) returned %q with an error", s, p)
			}
			return
		}
		if !valid {
			t.Fatalf("ParsePath(%q) accepted a path with an invalid segment", s)
		}
		if p.String() != s {
			t.Fatalf("ParsePath(%q).String() = %q", s, p)
		}
		checkValidPath(t, p)
	})
}

func FuzzSegmentEncoding(f *testing.F) {
	f.Add("a", "A")
	f.Add("Alice.Smith+tag@Example.org", "alice.smith+tag@example.org")
	f.Add("Zoë", "zoë")
	f.Add("%41", "A")
	f.Add("%61", "a")
	f.Add("%4A", "%4a")
	f.Add(".x", "%2ex")
	f.Add("_part.db", "%5fpart.db")
	f.Add("..", ".")
	f.Add("a/b", "a%2fb")
	f.Add("\xff", "%ff")
	f.Add("%4", "a%")
	f.Add(strings.Repeat("A", 85), strings.Repeat("a", 255))
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, s := range []string{a, b} {
			// s as a segment.
			if _, err := (Path{}).Child(s); err == nil {
				checkSegmentEncoding(t, s)
			} else {
				checkPathError(t, "Child", err)
			}
			// s as a file name.
			seg, err := DecodeSegment(s)
			if err != nil {
				checkPathError(t, "DecodeSegment", err)
				continue
			}
			if EncodeSegment(seg) != s {
				t.Fatalf("DecodeSegment(%q) = %q, which encodes to %q", s, seg, EncodeSegment(seg))
			}
			if _, err := (Path{}).Child(seg); err != nil {
				t.Fatalf("DecodeSegment(%q) = %q, an invalid segment: %v", s, seg, err)
			}
		}
		// Injectivity, also up to letter case.
		ea, eb := EncodeSegment(a), EncodeSegment(b)
		if a != b && strings.EqualFold(ea, eb) {
			t.Fatalf("EncodeSegment(%q) = %q and EncodeSegment(%q) = %q collide (up to case)", a, ea, b, eb)
		}
	})
}

// modelResolve is a straightforward reference implementation of
// Path.Resolve working on segment slices.
func modelResolve(base []string, ref string) ([]string, bool) {
	relative := ref == "." || ref == ".." || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../")
	var cur []string
	if relative {
		cur = slices.Clone(base)
	}
	for _, seg := range strings.Split(ref, "/") {
		switch {
		case relative && seg == ".":
		case relative && seg == "..":
			if len(cur) == 0 {
				return nil, false
			}
			cur = cur[:len(cur)-1]
		default:
			if _, err := (Path{}).Child(seg); err != nil {
				return nil, false
			}
			cur = append(cur, seg)
		}
	}
	return cur, true
}

func FuzzResolve(f *testing.F) {
	for _, ref := range seedPaths {
		f.Add("mail/a.org/alice", ref)
	}
	f.Add("mail/a.org/alice", "../bob")
	f.Add("mail/a.org/alice", "../../b.org/carol")
	f.Add("mail/a.org/alice", "../../..")
	f.Add("mail/a.org/alice", "../../../..")
	f.Add("mail/a.org/alice", "./x/../y/./z")
	f.Add("mail/a.org/alice", "../")
	f.Add("mail/a.org/alice", "..//x")
	f.Add("", "..")
	f.Add("", "./mail")
	f.Add("x", "../../../../etc/passwd")
	f.Fuzz(func(t *testing.T, baseStr, ref string) {
		var base Path
		if baseStr != "" {
			var err error
			if base, err = ParsePath(baseStr); err != nil {
				return
			}
		}
		p, err := base.Resolve(ref)
		want, ok := modelResolve(base.Segments(), ref)
		if err != nil {
			checkPathError(t, "Resolve", err)
			if ok {
				t.Fatalf("%q.Resolve(%q) failed (%v), want %q", base, ref, err, strings.Join(want, "/"))
			}
			return
		}
		if !ok {
			t.Fatalf("%q.Resolve(%q) = %q, want an error", base, ref, p)
		}
		if !slices.Equal(p.Segments(), want) {
			t.Fatalf("%q.Resolve(%q) = %q, want %q", base, ref, p, strings.Join(want, "/"))
		}
		// A relative reference resolves like lexical path joining.
		if ref == "." || ref == ".." || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") {
			if got, join := "/"+p.String(), path.Join("/"+base.String(), ref); got != join && !(p.IsRoot() && join == "/") {
				t.Fatalf("%q.Resolve(%q) = %q, path.Join gives %q", base, ref, p, join)
			}
		}
		checkValidPath(t, p)
	})
}
