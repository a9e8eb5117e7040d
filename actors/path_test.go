package actors

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParsePathValid(t *testing.T) {
	tests := []struct {
		in   string
		segs []string
	}{
		{"mail", []string{"mail"}},
		{"mail/example.org", []string{"mail", "example.org"}},
		{"mail/example.org/alice@example.org", []string{"mail", "example.org", "alice@example.org"}},
		{"mail/Example.org/Alice.Smith+tag@Example.org", []string{"mail", "Example.org", "Alice.Smith+tag@Example.org"}},
		{"people/Zoë", []string{"people", "Zoë"}},
		{"日本/東京", []string{"日本", "東京"}},
		{"with space/ leading and trailing ", []string{"with space", " leading and trailing "}},
		{"100%/%41", []string{"100%", "%41"}},
		{"_hidden/.dot/dot./...", []string{"_hidden", ".dot", "dot.", "..."}},
		{"a..b/-/+/@", []string{"a..b", "-", "+", "@"}},
		{"tab\there/nul\x00byte", []string{"tab\there", "nul\x00byte"}},
		{"x/" + strings.Repeat("Z", 85), []string{"x", strings.Repeat("Z", 85)}},
		{strings.Repeat("é", 42) + "Z", []string{strings.Repeat("é", 42) + "Z"}}, // 85 bytes, all escaped
		{strings.Repeat("a", 255), []string{strings.Repeat("a", 255)}},
		{strings.Repeat("a", 255) + "/" + strings.Repeat("0", 255), []string{strings.Repeat("a", 255), strings.Repeat("0", 255)}},
	}
	for _, tt := range tests {
		p, err := ParsePath(tt.in)
		if err != nil {
			t.Errorf("ParsePath(%q): unexpected error %v", tt.in, err)
			continue
		}
		if p.String() != tt.in {
			t.Errorf("ParsePath(%q).String() = %q", tt.in, p.String())
		}
		if got := p.Segments(); !slices.Equal(got, tt.segs) {
			t.Errorf("ParsePath(%q).Segments() = %q, want %q", tt.in, got, tt.segs)
		}
		if p.Depth() != len(tt.segs) {
			t.Errorf("ParsePath(%q).Depth() = %d, want %d", tt.in, p.Depth(), len(tt.segs))
		}
		if p.Name() != tt.segs[len(tt.segs)-1] {
			t.Errorf("ParsePath(%q).Name() = %q", tt.in, p.Name())
		}
		if p.IsRoot() {
			t.Errorf("ParsePath(%q).IsRoot() = true", tt.in)
		}
		// Building the path segment by segment gives the same value.
		var q Path
		for _, s := range tt.segs {
			if q, err = q.Child(s); err != nil {
				t.Fatalf("Child(%q): %v", s, err)
			}
		}
		if q != p {
			t.Errorf("built %q, parsed %q", q, p)
		}
		if MustParsePath(tt.in) != p {
			t.Errorf("MustParsePath(%q) differs from ParsePath", tt.in)
		}
	}
}

func TestParsePathInvalid(t *testing.T) {
	tests := []struct {
		in     string
		reason string
	}{
		{"", "empty path"},
		{"/", "leading slash"},
		{"/mail", "leading slash"},
		{"mail/", "trailing slash"},
		{"a//b", "empty segment at position 2"},
		{"a/b//", "trailing slash"},
		{"a/b//c", "empty segment at position 3"},
		{".", `segment "." at position 1`},
		{"..", `segment ".." at position 1`},
		{"./x", `segment "." at position 1`},
		{"../../etc/passwd", `segment ".." at position 1`},
		{"mail/../x", `segment ".." at position 2`},
		{"mail/./x", `segment "." at position 2`},
		{"mail/..", `segment ".." at position 2`},
		{"a/\xff", "invalid UTF-8 in segment at position 2"},
		{"a/b\xc3", "invalid UTF-8 in segment at position 2"},
		{"\xed\xa0\x80", "invalid UTF-8 in segment at position 1"}, // UTF-16 surrogate
		{strings.Repeat("a", 256), "segment at position 1 too long: 256 bytes (max 255)"},
		{"x/" + strings.Repeat("a", 300), "segment at position 2 too long: 300 bytes"},
		{strings.Repeat("A", 100), "encoded name of segment at position 1 too long: 300 bytes (max 255)"},
		{"x/" + strings.Repeat("Z", 86), "encoded name of segment at position 2 too long: 258 bytes"},
		{strings.Repeat("日", 30), "encoded name of segment at position 1 too long: 270 bytes"},
		{"." + strings.Repeat("a", 253), "encoded name of segment at position 1 too long: 256 bytes"},
	}
	for _, tt := range tests {
		p, err := ParsePath(tt.in)
		if err == nil {
			t.Errorf("ParsePath(%q) = %q, want error", tt.in, p)
			continue
		}
		if !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ParsePath(%q): error %v does not wrap ErrInvalidPath", tt.in, err)
		}
		var pe *PathError
		if !errors.As(err, &pe) {
			t.Errorf("ParsePath(%q): error %T is not a *PathError", tt.in, err)
			continue
		}
		if pe.Path != tt.in {
			t.Errorf("ParsePath(%q): PathError.Path = %q", tt.in, pe.Path)
		}
		if !strings.Contains(pe.Reason, tt.reason) {
			t.Errorf("ParsePath(%q): reason %q does not contain %q", tt.in, pe.Reason, tt.reason)
		}
		if p != (Path{}) {
			t.Errorf("ParsePath(%q) returned non-zero Path %q with error", tt.in, p)
		}
	}
}

func TestPathErrorMessage(t *testing.T) {
	_, err := ParsePath("a//b")
	want := `actors: invalid path "a//b": empty segment at position 2`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if errors.Unwrap(err) != ErrInvalidPath {
		t.Fatalf("Unwrap = %v", errors.Unwrap(err))
	}
}

func TestMustParsePathPanics(t *testing.T) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, ErrInvalidPath) {
			t.Fatalf("recovered %v, want an ErrInvalidPath error", r)
		}
	}()
	MustParsePath("a//b")
	t.Fatal("MustParsePath did not panic")
}

func TestRoot(t *testing.T) {
	var root Path
	if !root.IsRoot() || root.String() != "" || root.Depth() != 0 || root.Name() != "" || root.Segments() != nil {
		t.Fatalf("zero Path is not a proper root: %q depth %d", root, root.Depth())
	}
	if !root.Parent().IsRoot() {
		t.Fatal("parent of root is not root")
	}
	if !root.Ancestor(3).IsRoot() {
		t.Fatal("Ancestor of root is not root")
	}
	if root.IsAncestorOf(root) || !root.Contains(root) {
		t.Fatal("root must contain itself but not be its own ancestor")
	}
	mail := MustParsePath("mail")
	if !root.IsAncestorOf(mail) || !root.Contains(mail) || mail.Contains(root) {
		t.Fatal("root must be an ancestor of every other path")
	}
	if !mail.Parent().IsRoot() {
		t.Fatal("parent of a depth-1 path is not root")
	}
	if root.File("/data") != "" {
		t.Fatalf("root.File = %q, want \"\"", root.File("/data"))
	}
	if got := root.Dir("/data/"); got != filepath.Clean("/data") {
		t.Fatalf("root.Dir = %q", got)
	}
}

func TestNavigation(t *testing.T) {
	p := MustParsePath("mail/example.org/alice@example.org")
	if got := p.Parent().String(); got != "mail/example.org" {
		t.Errorf("Parent = %q", got)
	}
	if got := p.Parent().Parent().String(); got != "mail" {
		t.Errorf("Parent.Parent = %q", got)
	}
	for depth, want := range map[int]string{-1: "", 0: "", 1: "mail", 2: "mail/example.org", 3: p.String(), 4: p.String(), 100: p.String()} {
		if got := p.Ancestor(depth).String(); got != want {
			t.Errorf("Ancestor(%d) = %q, want %q", depth, got, want)
		}
	}
	if p.Name() != "alice@example.org" {
		t.Errorf("Name = %q", p.Name())
	}

	rel := []struct {
		a, b              string
		ancestor, contain bool
	}{
		{"mail", "mail/example.org", true, true},
		{"mail", "mail/example.org/alice@example.org", true, true},
		{"mail", "mail", false, true},
		{"mail/example.org", "mail", false, false},
		{"mail", "mailbox/x", false, false},
		{"mail", "mailbox", false, false},
		{"mail/a", "mail/ab", false, false},
		{"mail/a", "mail/a/b", true, true},
		{"a/b", "b/a", false, false},
	}
	for _, r := range rel {
		a, b := MustParsePath(r.a), MustParsePath(r.b)
		if got := a.IsAncestorOf(b); got != r.ancestor {
			t.Errorf("%q.IsAncestorOf(%q) = %v", a, b, got)
		}
		if got := a.Contains(b); got != r.contain {
			t.Errorf("%q.Contains(%q) = %v", a, b, got)
		}
	}
}

func TestCommonAncestor(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"mail/a.org/alice", "mail/a.org/bob", "mail/a.org"},
		{"mail/a.org/alice", "mail/b.org/carol", "mail"},
		{"mail/a.org/alice", "mail/a.org", "mail/a.org"},
		{"mail/a.org", "mail/a.org/alice", "mail/a.org"},
		{"mail/a.org", "mail/a.org", "mail/a.org"},
		{"mail/a", "mail/ab", "mail"},
		{"mail/ab", "mail/a", "mail"},
		{"mail/ab/x", "mail/ac/x", "mail"},
		{"mail", "news", ""},
		{"mail", "mailbox", ""},
		{"mail", "", ""},
		{"", "", ""},
	}
	parse := func(s string) Path {
		if s == "" {
			return Path{}
		}
		return MustParsePath(s)
	}
	for _, tt := range tests {
		a, b := parse(tt.a), parse(tt.b)
		if got := CommonAncestor(a, b).String(); got != tt.want {
			t.Errorf("CommonAncestor(%q, %q) = %q, want %q", a, b, got, tt.want)
		}
		if got := CommonAncestor(b, a).String(); got != tt.want {
			t.Errorf("CommonAncestor(%q, %q) = %q, want %q", b, a, got, tt.want)
		}
	}
}

func TestChild(t *testing.T) {
	var root Path
	mail, err := root.Child("mail")
	if err != nil || mail.String() != "mail" {
		t.Fatalf("root.Child(mail) = %q, %v", mail, err)
	}
	org, err := mail.Child("Example.org")
	if err != nil || org.String() != "mail/Example.org" {
		t.Fatalf("Child = %q, %v", org, err)
	}
	bad := []struct{ seg, reason string }{
		{"", "empty segment"},
		{".", `segment "."`},
		{"..", `segment ".."`},
		{"a/b", "contains '/'"},
		{"/", "contains '/'"},
		{"\xff", "invalid UTF-8"},
		{strings.Repeat("a", 256), "too long: 256 bytes"},
		{strings.Repeat("A", 100), "encoded name of segment too long: 300 bytes"},
	}
	for _, b := range bad {
		c, err := mail.Child(b.seg)
		if err == nil {
			t.Errorf("Child(%q) = %q, want error", b.seg, c)
			continue
		}
		var pe *PathError
		if !errors.Is(err, ErrInvalidPath) || !errors.As(err, &pe) || !strings.Contains(pe.Reason, b.reason) {
			t.Errorf("Child(%q): error %v, want reason containing %q", b.seg, err, b.reason)
		}
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		base, ref, want string
	}{
		{"mail/a.org/alice", "../bob", "mail/a.org/bob"},
		{"mail/a.org/alice", "../../b.org/carol", "mail/b.org/carol"},
		{"mail/a.org/alice", "..", "mail/a.org"},
		{"mail/a.org/alice", "../..", "mail"},
		{"mail/a.org/alice", "../../..", ""},
		{"mail/a.org/alice", ".", "mail/a.org/alice"},
		{"mail/a.org/alice", "./x", "mail/a.org/alice/x"},
		{"mail/a.org/alice", "./x/./y", "mail/a.org/alice/x/y"},
		{"mail/a.org/alice", "./x/../y", "mail/a.org/alice/y"},
		{"mail/a.org/alice", "../../../news/x", "news/x"},
		{"mail/a.org/alice", "./.../..x", "mail/a.org/alice/.../..x"},
		{"mail/a.org/alice", "news/x", "news/x"},
		{"mail/a.org/alice", "mail/a.org/Bob Smith", "mail/a.org/Bob Smith"},
		{"mail/a.org/alice", "...", "..."},
		{"mail/a.org/alice", ".x", ".x"},
		{"", ".", ""},
		{"", "./mail", "mail"},
		{"", "mail", "mail"},
		{"mail", "..", ""},
	}
	for _, tt := range tests {
		var base Path
		if tt.base != "" {
			base = MustParsePath(tt.base)
		}
		got, err := base.Resolve(tt.ref)
		if err != nil {
			t.Errorf("%q.Resolve(%q): %v", base, tt.ref, err)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("%q.Resolve(%q) = %q, want %q", base, tt.ref, got, tt.want)
		}
	}

	bad := []struct {
		base, ref, reason string
	}{
		{"mail/a.org/alice", "../../../..", "'..' at position 4 climbs above the root"},
		{"mail/a.org/alice", "../../../../etc/passwd", "climbs above the root"},
		{"mail/a.org/alice", "./../../../..", "climbs above the root"},
		{"mail/a.org/alice", "../../../../mail", "climbs above the root"}, // no clamping at the root
		{"", "..", "climbs above the root (resolving from the root)"},
		{"", "./..", "climbs above the root"},
		{"mail/a.org/alice", "../", "empty segment at position 2"},
		{"mail/a.org/alice", "./", "empty segment at position 2"},
		{"mail/a.org/alice", ".//x", "empty segment at position 2"},
		{"mail/a.org/alice", "../\xff", "invalid UTF-8 in segment at position 2"},
		{"mail/a.org/alice", "../" + strings.Repeat("a", 256), "too long"},
		{"mail/a.org/alice", "", "empty path"},
		{"mail/a.org/alice", "/etc/passwd", "leading slash"},
		{"mail/a.org/alice", "mail/../x", `segment ".." at position 2`},
		{"mail/a.org/alice", ".../../x", `segment ".." at position 2`},
	}
	for _, tt := range bad {
		var base Path
		if tt.base != "" {
			base = MustParsePath(tt.base)
		}
		got, err := base.Resolve(tt.ref)
		if err == nil {
			t.Errorf("%q.Resolve(%q) = %q, want error", base, tt.ref, got)
			continue
		}
		var pe *PathError
		if !errors.Is(err, ErrInvalidPath) || !errors.As(err, &pe) {
			t.Errorf("%q.Resolve(%q): error %v is not a *PathError wrapping ErrInvalidPath", base, tt.ref, err)
			continue
		}
		if pe.Path != tt.ref || !strings.Contains(pe.Reason, tt.reason) {
			t.Errorf("%q.Resolve(%q): error %v, want reason containing %q", base, tt.ref, err, tt.reason)
		}
	}
}

func TestDirAndFile(t *testing.T) {
	data := filepath.FromSlash("/srv/fractal/data")
	p := MustParsePath("mail/Example.org/Alice.Smith+tag@Example.org")
	wantDir := filepath.Join(data, "mail", "%45xample.org", "%41lice.%53mith+tag@%45xample.org")
	if got := p.Dir(data); got != wantDir {
		t.Errorf("Dir = %q, want %q", got, wantDir)
	}
	if got := p.File(data); got != filepath.Join(wantDir, "_part.db") {
		t.Errorf("File = %q", got)
	}
	if got := p.Parent().Dir(data); got != filepath.Dir(wantDir) {
		t.Errorf("parent Dir = %q, want %q", got, filepath.Dir(wantDir))
	}
	for _, dataDir := range []string{data, "data", "./data/", "", "."} {
		for _, s := range []string{"mail", "mail/example.org/alice@example.org", "_x/.y/z./..."} {
			q := MustParsePath(s)
			dir := q.Dir(dataDir)
			back, err := PathFromDir(dataDir, dir)
			if err != nil || back != q {
				t.Errorf("PathFromDir(%q, %q) = %q, %v; want %q", dataDir, dir, back, err, q)
			}
		}
		root, err := PathFromDir(dataDir, dataDir)
		if err != nil || !root.IsRoot() {
			t.Errorf("PathFromDir(%q, itself) = %q, %v; want root", dataDir, root, err)
		}
	}
	// Lexical cleaning of dir.
	got, err := PathFromDir(data, filepath.Join(data, "mail")+string(filepath.Separator)+"."+string(filepath.Separator))
	if err != nil || got.String() != "mail" {
		t.Errorf("PathFromDir with trailing /./ = %q, %v", got, err)
	}
}

func TestPathFromDirErrors(t *testing.T) {
	data := filepath.FromSlash("/srv/fractal/data")
	tests := []struct{ dir, reason string }{
		{filepath.FromSlash("/srv/fractal"), "not inside data directory"},
		{filepath.FromSlash("/srv/fractal/database"), "not inside data directory"},
		{filepath.FromSlash("/etc/passwd"), "not inside data directory"},
		{filepath.FromSlash("/srv/fractal/data/../other/x"), "not inside data directory"},
		{filepath.FromSlash("relative/dir"), "not inside data directory"},
		{filepath.FromSlash("/srv/fractal/data/mail/_part.db"), `component "_part.db" at position 2`},
		{filepath.FromSlash("/srv/fractal/data/Mail"), `component "Mail" at position 1`},
		{filepath.FromSlash("/srv/fractal/data/mail/%61"), "non-canonical"},
		{filepath.FromSlash("/srv/fractal/data/.git"), "starts with '.'"},
		{filepath.FromSlash("/srv/fractal/data/..x"), "starts with '.'"},
	}
	for _, tt := range tests {
		p, err := PathFromDir(data, tt.dir)
		if err == nil {
			t.Errorf("PathFromDir(%q) = %q, want error", tt.dir, p)
			continue
		}
		var pe *PathError
		if !errors.Is(err, ErrInvalidPath) || !errors.As(err, &pe) || !strings.Contains(pe.Reason, tt.reason) {
			t.Errorf("PathFromDir(%q): error %v, want reason containing %q", tt.dir, err, tt.reason)
		}
	}
}

func ExamplePath_Resolve() {
	alice := MustParsePath("mail/example.org/alice@example.org")
	for _, ref := range []string{"../bob@example.org", "../../other.org/carol", "..", "news"} {
		p, err := alice.Resolve(ref)
		fmt.Printf("%s -> %q %v\n", ref, p, err)
	}
	_, err := alice.Resolve("../../../../etc/passwd")
	fmt.Println(err)
	// Output:
	// ../bob@example.org -> "mail/example.org/bob@example.org" <nil>
	// ../../other.org/carol -> "mail/other.org/carol" <nil>
	// .. -> "mail/example.org" <nil>
	// news -> "news" <nil>
	// actors: invalid path "../../../../etc/passwd": '..' at position 4 climbs above the root (resolving from "mail/example.org/alice@example.org")
}

func TestKindMatchesByDepth(t *testing.T) {
	k := &kindSpec{segs: []string{"mail", "*", "*"}}
	for path, want := range map[string]bool{
		"mail/a/b": true, "mail/a": false, "mail/a/b/c": false, "mail": false, "post/a/b": false, "mail/*/b": true,
	} {
		if got := k.matches(MustParsePath(path)); got != want {
			t.Errorf("mail/*/* matches %q = %v, want %v", path, got, want)
		}
	}
}
