package actors

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// MaxSegmentBytes is the maximum length in bytes of one path segment.
//
// A segment is any non-empty, valid UTF-8 string of at most MaxSegmentBytes
// bytes that is not "." or ".." and contains no '/'. In addition, the file
// name the segment is stored under (see [EncodeSegment]) must fit in
// MaxSegmentBytes bytes, the usual limit of a file name. Encoding expands a
// byte to at most three bytes, so every valid UTF-8 segment of at most 85
// bytes (MaxSegmentBytes/3) is guaranteed to fit; longer segments fit only
// if enough of their bytes are kept unescaped (a segment made only of
// lowercase ASCII letters and digits may use all 255 bytes).
const MaxSegmentBytes = 255

// PartFileName is the name of the runtime's own database file inside the
// directory of a part. Names starting with '_' are never produced by
// [EncodeSegment], so this file cannot clash with a child directory.
const PartFileName = "_part.db"

// ErrInvalidPath is the sentinel wrapped by every error reporting a
// malformed path, segment, relative reference or encoded file name.
// Test for it with errors.Is.
var ErrInvalidPath = errors.New("actors: invalid path")

// PathError describes why a path, segment, reference, encoded name or
// directory was rejected. It wraps [ErrInvalidPath].
type PathError struct {
	// Path is the rejected input: a path, a relative reference, a segment
	// being added to a path, an encoded file name or a directory.
	Path string
	// Reason says what is wrong, e.g. "empty segment at position 2".
	// Segment positions are 1-based.
	Reason string
}

// Error formats the error as `actors: invalid path "a//b": empty segment at
// position 2`.
func (e *PathError) Error() string {
	return fmt.Sprintf("actors: invalid path %q: %s", e.Path, e.Reason)
}

// Unwrap returns [ErrInvalidPath].
func (e *PathError) Unwrap() error { return ErrInvalidPath }

func pathError(path, format string, args ...any) error {
	return &PathError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// Path is the absolute address of a part in the tree of parts, for example
// "mail/example.org/alice@example.org".
//
// A Path is a sequence of segments (see [MaxSegmentBytes]) kept in its
// canonical string form: the segments joined by '/'. The zero value is the
// root of the tree: it lies above all parts, has no segments and its String
// is "". Paths are immutable, comparable with == and usable as map keys;
// two Paths are equal exactly when their segments are equal.
type Path struct {
	s string
}

// ParsePath parses an absolute path: one or more segments separated by
// single '/' characters, with no leading or trailing '/', no empty segment
// and no "." or ".." segment. Each segment must satisfy the rules described
// at [MaxSegmentBytes]. Segments are case-sensitive and are not normalized
// in any way, so ParsePath(s).String() == s whenever parsing succeeds.
//
// The root cannot be written as a string; ParsePath("") fails and the
// root is the zero Path. Relative references ("../bob") are handled by
// [Path.Resolve]. Every error is a *[PathError] wrapping [ErrInvalidPath].
func ParsePath(s string) (Path, error) {
	if s == "" {
		return Path{}, pathError(s, "empty path")
	}
	if s[0] == '/' {
		return Path{}, pathError(s, "leading slash")
	}
	if s[len(s)-1] == '/' {
		return Path{}, pathError(s, "trailing slash")
	}
	rest := s
	for pos := 1; ; pos++ {
		seg, tail, more := strings.Cut(rest, "/")
		if reason := segmentProblem(seg, pos); reason != "" {
			return Path{}, pathError(s, "%s", reason)
		}
		if !more {
			break
		}
		rest = tail
	}
	return Path{s: s}, nil
}

// MustParsePath is like [ParsePath] but panics if s is not a valid path.
// It is meant for tests, examples and paths known at compile time.
func MustParsePath(s string) Path {
	p, err := ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

// segmentProblem returns "" if seg is a valid segment, and otherwise a
// reason naming what is wrong. pos is the 1-based position of the segment,
// or 0 when the segment stands alone.
func segmentProblem(seg string, pos int) string {
	at := ""
	if pos > 0 {
		at = fmt.Sprintf(" at position %d", pos)
	}
	switch {
	case seg == "":
		return "empty segment" + at
	case seg == "." || seg == "..":
		return fmt.Sprintf("segment %q%s is not allowed", seg, at)
	case len(seg) > MaxSegmentBytes:
		return fmt.Sprintf("segment%s too long: %d bytes (max %d)", at, len(seg), MaxSegmentBytes)
	case strings.IndexByte(seg, '/') >= 0:
		return fmt.Sprintf("segment%s contains '/'", at)
	case !utf8.ValidString(seg):
		return "invalid UTF-8 in segment" + at
	}
	if n := encodedLen(seg); n > MaxSegmentBytes {
		return fmt.Sprintf("encoded name of segment%s too long: %d bytes (max %d)", at, n, MaxSegmentBytes)
	}
	return ""
}

// IsRoot reports whether p is the root, the zero Path.
func (p Path) IsRoot() bool { return p.s == "" }

// String returns the canonical form of p: its segments joined by '/'.
// It returns "" for the root.
func (p Path) String() string { return p.s }

// Segments returns a new slice holding the segments of p, outermost first.
// It returns nil for the root.
func (p Path) Segments() []string {
	if p.s == "" {
		return nil
	}
	return strings.Split(p.s, "/")
}

// segment returns the segment at index i (0-based), without allocating;
// i must be below p.Depth().
func (p Path) segment(i int) string {
	rest := p.s
	for ; i > 0; i-- {
		_, rest, _ = strings.Cut(rest, "/")
	}
	seg, _, _ := strings.Cut(rest, "/")
	return seg
}

// Depth returns the number of segments of p; the root has depth 0.
func (p Path) Depth() int {
	if p.s == "" {
		return 0
	}
	return strings.Count(p.s, "/") + 1
}

// Name returns the last segment of p, or "" for the root.
func (p Path) Name() string {
	return p.s[strings.LastIndexByte(p.s, '/')+1:]
}

// Parent returns the path of the part that contains p. The parent of a
// path of depth 1 is the root, and the parent of the root is the root.
func (p Path) Parent() Path {
	i := strings.LastIndexByte(p.s, '/')
	if i < 0 {
		return Path{}
	}
	return Path{s: p.s[:i]}
}

// Child returns the path of the child of p named segment. It fails with a
// *[PathError] wrapping [ErrInvalidPath] if segment is not a valid segment
// (see [MaxSegmentBytes]); in particular "", ".", ".." and anything
// containing '/' are rejected.
func (p Path) Child(segment string) (Path, error) {
	s := segment
	if p.s != "" {
		s = p.s + "/" + segment
	}
	if reason := segmentProblem(segment, 0); reason != "" {
		return Path{}, pathError(s, "%s", reason)
	}
	return Path{s: s}, nil
}

// Ancestor returns the prefix of p made of its first depth segments. It
// returns the root if depth <= 0 and p itself if depth >= p.Depth().
func (p Path) Ancestor(depth int) Path {
	if depth <= 0 {
		return Path{}
	}
	for i := 0; i < len(p.s); i++ {
		if p.s[i] == '/' {
			depth--
			if depth == 0 {
				return Path{s: p.s[:i]}
			}
		}
	}
	return p
}

// IsAncestorOf reports whether p is a strict ancestor of q: q lies inside
// the subtree of p and differs from p. The root is an ancestor of every
// other path; no path is an ancestor of itself.
func (p Path) IsAncestorOf(q Path) bool {
	if p.s == "" {
		return q.s != ""
	}
	return len(q.s) > len(p.s) && q.s[len(p.s)] == '/' && strings.HasPrefix(q.s, p.s)
}

// Contains reports whether q lies in the subtree rooted at p, that is
// whether q equals p or p is an ancestor of q.
func (p Path) Contains(q Path) bool {
	return p == q || p.IsAncestorOf(q)
}

// CommonAncestor returns the deepest path that contains both a and b
// (see [Path.Contains]): the smallest whole of which both are part. It is
// a itself if a contains b, and the root if a and b share no first
// segment.
func CommonAncestor(a, b Path) Path {
	n := min(len(a.s), len(b.s))
	i := 0
	for i < n && a.s[i] == b.s[i] {
		i++
	}
	// a.s[:i] is the longest common byte prefix; it ends on a segment
	// boundary if it is all of one path and the other continues with '/'
	// (or ends too).
	if i == len(a.s) && (i == len(b.s) || b.s[i] == '/') {
		return a
	}
	if i == len(b.s) && a.s[i] == '/' {
		return b
	}
	j := strings.LastIndexByte(a.s[:i], '/')
	if j < 0 {
		return Path{}
	}
	return Path{s: a.s[:j]}
}

// Resolve resolves ref against p, which acts as the current part.
//
// ref is relative when it equals "." or "..", or starts with "./" or
// "../"; otherwise it is an absolute path and Resolve returns
// ParsePath(ref). In a relative reference, "." segments stay where they are
// and ".." segments move to the parent, in order; other segments descend
// into a child and must be valid segments, and empty segments are invalid.
// So, from "mail/a.org/alice", "../bob" resolves to "mail/a.org/bob",
// "../../b.org/carol" to "mail/b.org/carol", "." to "mail/a.org/alice" and
// "../../.." to the root. A reference that would move above the root, at
// any step, fails. Every error is a *[PathError] wrapping [ErrInvalidPath].
func (p Path) Resolve(ref string) (Path, error) {
	if !isRelative(ref) {
		return ParsePath(ref)
	}
	cur := p.s
	rest := ref
	for pos := 1; ; pos++ {
		seg, tail, more := strings.Cut(rest, "/")
		switch seg {
		case ".":
		case "..":
			if cur == "" {
				from := "the root"
				if p.s != "" {
					from = fmt.Sprintf("%q", p.s)
				}
				return Path{}, pathError(ref, "'..' at position %d climbs above the root (resolving from %s)", pos, from)
			}
			cur = Path{s: cur}.Parent().s
		default:
			if reason := segmentProblem(seg, pos); reason != "" {
				return Path{}, pathError(ref, "%s", reason)
			}
			if cur == "" {
				cur = seg
			} else {
				cur = cur + "/" + seg
			}
		}
		if !more {
			break
		}
		rest = tail
	}
	return Path{s: cur}, nil
}

func isRelative(ref string) bool {
	return ref == "." || ref == ".." || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../")
}

// plainByte reports whether c belongs to the plain set [a-z0-9._@+-].
func plainByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '@' || c == '+'
}

// keep reports whether byte i of seg is written unescaped.
func keep(seg string, i int) bool {
	switch c := seg[i]; c {
	case '.':
		return i != 0 && i != len(seg)-1
	case '_':
		return i != 0
	default:
		return plainByte(c)
	}
}

// encodedLen returns len(EncodeSegment(seg)).
func encodedLen(seg string) int {
	n := len(seg)
	for i := 0; i < len(seg); i++ {
		if !keep(seg, i) {
			n += 2
		}
	}
	return n
}

const lowerHex = "0123456789abcdef"

// EncodeSegment returns the file name of the directory of a part named
// seg. The mapping is part of the data directory format and does not
// change. It works byte by byte:
//
//   - the plain bytes 'a'-'z', '0'-'9', '-', '_', '.', '@' and '+' are kept
//     as they are, except that a '.' that is the first or the last byte of
//     the segment, and a '_' that is the first byte, are escaped;
//   - every other byte (uppercase ASCII letters, '%', space, control bytes,
//     each byte of a non-ASCII UTF-8 sequence, ...) is escaped;
//   - an escaped byte is written as '%' followed by two lowercase
//     hexadecimal digits.
//
// For example "Alice.Smith+tag@Example.org" is stored as
// "%41lice.%53mith+tag@%45xample.org", "Zoë" as "%5ao%c3%ab" and ".profile"
// as "%2eprofile". Consequences:
//
//   - encoded names only contain the bytes [a-z0-9._@+%-]; they contain no
//     uppercase letter and no non-ASCII byte, so two different segments
//     never map to names that differ only in letter case or in Unicode
//     normalization, which makes the layout safe on case-insensitive or
//     normalizing file systems;
//   - no name is "." or "..", and no name is hidden (starts with '.') or
//     ends with '.';
//   - no name starts with '_': such names are reserved for the runtime's
//     own files in a part's directory, such as "_part.db", "_part.db-wal"
//     and "_part.db-shm";
//   - an encoded name is at most three times as long as its segment.
//
// Windows reserved device names (such as "con" or "nul") are not escaped.
//
// seg should be a valid segment (see [MaxSegmentBytes]); then the result
// is at most MaxSegmentBytes bytes long and [DecodeSegment] returns seg.
// EncodeSegment does not validate seg: any other string is still encoded
// (injectively), but DecodeSegment rejects the result.
func EncodeSegment(seg string) string {
	n := encodedLen(seg)
	if n == len(seg) {
		return seg
	}
	var b strings.Builder
	b.Grow(n)
	for i := 0; i < len(seg); i++ {
		if keep(seg, i) {
			b.WriteByte(seg[i])
			continue
		}
		c := seg[i]
		b.WriteByte('%')
		b.WriteByte(lowerHex[c>>4])
		b.WriteByte(lowerHex[c&0xf])
	}
	return b.String()
}

// DecodeSegment returns the segment stored under the file name name; it is
// the inverse of [EncodeSegment]. Decoding is strict: it fails for every
// name that EncodeSegment does not produce for a valid segment, including
// names with uppercase letters or uppercase hexadecimal digits, escapes of
// bytes that must be kept plain ("%61" for "a"), a leading or trailing
// '.', a leading '_' (the runtime's own files such as "_part.db"),
// malformed escapes, and names decoding to an invalid segment. Hence
// EncodeSegment(seg) == name whenever DecodeSegment(name) returns seg and
// a nil error. Every error is a *[PathError] wrapping [ErrInvalidPath].
func DecodeSegment(name string) (string, error) {
	switch {
	case name == "":
		return "", pathError(name, "empty file name")
	case len(name) > MaxSegmentBytes:
		return "", pathError(name, "file name too long: %d bytes (max %d)", len(name), MaxSegmentBytes)
	case name[0] == '_':
		return "", pathError(name, "file name starts with '_' (reserved for the runtime's own files)")
	case name[0] == '.':
		return "", pathError(name, "file name starts with '.'")
	case name[len(name)-1] == '.':
		return "", pathError(name, "file name ends with '.'")
	}
	if strings.IndexByte(name, '%') < 0 {
		// No escapes: the name must consist of plain bytes only, and
		// then it is its own segment.
		for i := 0; i < len(name); i++ {
			if !plainByte(name[i]) {
				return "", pathError(name, "byte %q at offset %d is not allowed in an encoded name", name[i], i)
			}
		}
		return name, nil
	}
	buf := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '%' {
			if !plainByte(c) {
				return "", pathError(name, "byte %q at offset %d is not allowed in an encoded name", c, i)
			}
			buf = append(buf, c)
			continue
		}
		if i+2 >= len(name) {
			return "", pathError(name, "truncated escape at offset %d", i)
		}
		hi, lo := unhex(name[i+1]), unhex(name[i+2])
		if hi < 0 || lo < 0 {
			return "", pathError(name, "escape %q at offset %d is not '%%' and two lowercase hexadecimal digits", name[i:i+3], i)
		}
		buf = append(buf, byte(hi<<4|lo))
		i += 2
	}
	seg := string(buf)
	if reason := segmentProblem(seg, 0); reason != "" {
		return "", pathError(name, "decodes to an invalid segment: %s", reason)
	}
	if canon := EncodeSegment(seg); canon != name {
		return "", pathError(name, "non-canonical encoding (canonical form is %q)", canon)
	}
	return seg, nil
}

// unhex returns the value of a lowercase hexadecimal digit, or -1.
func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}

// Dir returns the directory of the part p inside the data directory
// dataDir: filepath.Join(dataDir, EncodeSegment(s1), EncodeSegment(s2),
// ...) for the segments s1, s2, ... of p. The directory of the root is
// dataDir itself (cleaned). The directory of a part holds its database
// file (see [Path.File]) and the directories of its children, so a subtree
// of parts is one directory tree.
func (p Path) Dir(dataDir string) string {
	if p.s == "" {
		return filepath.Join(dataDir)
	}
	elems := make([]string, 0, p.Depth()+1)
	elems = append(elems, dataDir)
	rest := p.s
	for {
		seg, tail, more := strings.Cut(rest, "/")
		elems = append(elems, EncodeSegment(seg))
		if !more {
			break
		}
		rest = tail
	}
	return filepath.Join(elems...)
}

// File returns the path of the SQLite database file owned by the part p:
// the file "_part.db" inside p.Dir(dataDir). SQLite keeps its companion
// files ("_part.db-wal", "_part.db-shm") beside it. The root is not a part
// and owns no file: File returns "" for the root.
func (p Path) File(dataDir string) string {
	if p.s == "" {
		return ""
	}
	return filepath.Join(p.Dir(dataDir), PartFileName)
}

// PathFromDir returns the path of the part whose directory is dir inside
// the data directory dataDir; it is the inverse of [Path.Dir], meant for
// tools that walk the data directory. Both arguments are cleaned
// lexically (symbolic links are not followed) and must both be absolute or
// both be relative. dir equal to dataDir yields the root. It fails if dir
// is not inside dataDir or if one of its components below dataDir is not
// a name produced by [EncodeSegment] (see [DecodeSegment]); every error is
// a *[PathError] wrapping [ErrInvalidPath].
func PathFromDir(dataDir, dir string) (Path, error) {
	rel, err := filepath.Rel(dataDir, dir)
	if err != nil {
		return Path{}, pathError(dir, "not inside data directory %q: %v", dataDir, err)
	}
	if rel == "." {
		return Path{}, nil
	}
	sep := string(filepath.Separator)
	if rel == ".." || strings.HasPrefix(rel, ".."+sep) || filepath.IsAbs(rel) {
		return Path{}, pathError(dir, "not inside data directory %q", dataDir)
	}
	var b strings.Builder
	b.Grow(len(rel))
	for i, name := range strings.Split(rel, sep) {
		seg, err := DecodeSegment(name)
		if err != nil {
			var pe *PathError
			reason := err.Error()
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			return Path{}, pathError(dir, "component %q at position %d below the data directory: %s", name, i+1, reason)
		}
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(seg)
	}
	return Path{s: b.String()}, nil
}
