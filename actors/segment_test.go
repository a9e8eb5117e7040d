package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEncodeSegment(t *testing.T) {
	tests := []struct{ seg, name string }{
		{"alice@example.org", "alice@example.org"},
		{"Alice.Smith+tag@Example.org", "%41lice.%53mith+tag@%45xample.org"},
		{"Zoë", "%5ao%c3%ab"},
		{"日本", "%e6%97%a5%e6%9c%ac"},
		{"a b", "a%20b"},
		{"100%", "100%25"},
		{"%41", "%2541"},
		{".profile", "%2eprofile"},
		{"dot.", "dot%2e"},
		{"...", "%2e.%2e"},
		{"..x", "%2e.x"},
		{"_part.db", "%5fpart.db"},
		{"a_b_", "a_b_"},
		{"__", "%5f_"},
		{"-+@", "-+@"},
		{"tab\t", "tab%09"},
		{"\x00", "%00"},
		{"\x7f", "%7f"},
		{"a..b", "a..b"},
		{"x.", "x%2e"},
		{"A", "%41"},
		{"J", "%4a"},
		{"~", "%7e"},
		{"CON", "%43%4f%4e"},
	}
	for _, tt := range tests {
		if got := EncodeSegment(tt.seg); got != tt.name {
			t.Errorf("EncodeSegment(%q) = %q, want %q", tt.seg, got, tt.name)
		}
		got, err := DecodeSegment(tt.name)
		if err != nil || got != tt.seg {
			t.Errorf("DecodeSegment(%q) = %q, %v; want %q", tt.name, got, err, tt.seg)
		}
	}
}

func TestDecodeSegmentRejectsNonCanonical(t *testing.T) {
	tests := []struct{ name, reason string }{
		{"", "empty file name"},
		{"%4A", "lowercase hexadecimal"},
		{"%61", `non-canonical encoding (canonical form is "a")`},
		{"a%2eb", `canonical form is "a.b"`},
		{"a%5fb", `canonical form is "a_b"`},
		{"%2b", `canonical form is "+"`},
		{".hidden", "starts with '.'"},
		{".", "starts with '.'"},
		{"..", "starts with '.'"},
		{"dot.", "ends with '.'"},
		{"_x", "starts with '_'"},
		{"_part.db", "starts with '_'"},
		{"_part.db-wal", "starts with '_'"},
		{"A", "byte 'A' at offset 0 is not allowed"},
		{"a%41B", "byte 'B' at offset 4"},
		{"a b", "byte ' ' at offset 1"},
		{"a/b", "byte '/' at offset 1"},
		{"é", "is not allowed"},
		{"%4", "truncated escape at offset 0"},
		{"a%", "truncated escape at offset 1"},
		{"ab%4", "truncated escape at offset 2"},
		{"%g1", "lowercase hexadecimal"},
		{"%%41", "lowercase hexadecimal"},
		{"%2e", `segment "." is not allowed`},
		{"%2e%2e", `segment ".." is not allowed`},
		{"%2f", "contains '/'"},
		{"a%2fb", "contains '/'"},
		{"%ff", "invalid UTF-8"},
		{"%c3", "invalid UTF-8"},
		{strings.Repeat("a", 256), "file name too long: 256 bytes"},
	}
	for _, tt := range tests {
		seg, err := DecodeSegment(tt.name)
		if err == nil {
			t.Errorf("DecodeSegment(%q) = %q, want error", tt.name, seg)
			continue
		}
		var pe *PathError
		if !errors.Is(err, ErrInvalidPath) || !errors.As(err, &pe) {
			t.Errorf("DecodeSegment(%q): error %v is not a *PathError wrapping ErrInvalidPath", tt.name, err)
			continue
		}
		if !strings.Contains(pe.Reason, tt.reason) {
			t.Errorf("DecodeSegment(%q): reason %q does not contain %q", tt.name, pe.Reason, tt.reason)
		}
	}
}

// TestDecodeSegmentExhaustive checks, for every name of up to four bytes
// over an alphabet that includes escapes and bytes outside the encoded
// alphabet, that a successful decode is canonical.
func TestDecodeSegmentExhaustive(t *testing.T) {
	alphabet := []byte("a.%_2eEA/f-9 \xc3")
	var check func(name []byte)
	n := 0
	check = func(name []byte) {
		n++
		s := string(name)
		seg, err := DecodeSegment(s)
		if err == nil {
			if enc := EncodeSegment(seg); enc != s {
				t.Fatalf("DecodeSegment(%q) = %q but EncodeSegment gives %q", s, seg, enc)
			}
			if _, err := (Path{}).Child(seg); err != nil {
				t.Fatalf("DecodeSegment(%q) = %q, an invalid segment: %v", s, seg, err)
			}
		} else if !errors.Is(err, ErrInvalidPath) {
			t.Fatalf("DecodeSegment(%q): %v does not wrap ErrInvalidPath", s, err)
		}
		if len(name) == 4 {
			return
		}
		for _, c := range alphabet {
			check(append(name, c))
		}
	}
	check(nil)
	t.Logf("checked %d names", n)
}

// TestEncodeAllBytePairs round-trips every valid segment of one or two
// bytes.
func TestEncodeAllBytePairs(t *testing.T) {
	for a := 0; a < 256; a++ {
		for b := -1; b < 256; b++ {
			seg := string([]byte{byte(a)})
			if b >= 0 {
				seg += string([]byte{byte(b)})
			}
			if _, err := (Path{}).Child(seg); err != nil {
				continue
			}
			checkSegmentEncoding(t, seg)
		}
	}
}

// checkSegmentEncoding verifies the promises of EncodeSegment for the valid
// segment seg.
func checkSegmentEncoding(t *testing.T, seg string) {
	t.Helper()
	name := EncodeSegment(seg)
	if name == "" || name == "." || name == ".." || name[0] == '.' || name[0] == '_' || name[len(name)-1] == '.' {
		t.Fatalf("EncodeSegment(%q) = %q: forbidden name", seg, name)
	}
	if len(name) > MaxSegmentBytes {
		t.Fatalf("EncodeSegment(%q) = %q: %d bytes", seg, name, len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !plainByte(c) && c != '%' {
			t.Fatalf("EncodeSegment(%q) = %q: byte %q outside [a-z0-9._@+%%-]", seg, name, c)
		}
	}
	if strings.ToLower(name) != name {
		t.Fatalf("EncodeSegment(%q) = %q is not lowercase", seg, name)
	}
	got, err := DecodeSegment(name)
	if err != nil || got != seg {
		t.Fatalf("DecodeSegment(EncodeSegment(%q)) = %q, %v", seg, got, err)
	}
}

// TestEncodingCollisionFree generates many segments that are deliberately
// similar (differing in case, escapes, dots and underscores) and checks
// that their encodings are distinct even when compared case-insensitively.
func TestEncodingCollisionFree(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if env := os.Getenv("FRACTAL_PATH_SEED"); env != "" {
		var err error
		if seed, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("FRACTAL_PATH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (set FRACTAL_PATH_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pieces := []string{
		"a", "A", "b", "B", "z", "Z", "e", "E", "f", "F", "0", "9",
		".", "..", "_", "-", "+", "@", "%", "%2e", "%2E", "%41", "%61", "%5f",
		" ", "\t", "\x00", "é", "É", "e\u0301", "ß", "ss", "SS", "ſ", "K", "\u212a",
		"日", "本", "\U0001f600", "\x7f",
	}
	count := 100000
	if testing.Short() {
		count = 10000
	}
	seen := make(map[string]string, count)
	for len(seen) < count {
		var b strings.Builder
		for n := 1 + rng.IntN(6); n > 0; n-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		seg := b.String()
		if _, err := (Path{}).Child(seg); err != nil {
			continue
		}
		checkSegmentEncoding(t, seg)
		key := strings.ToLower(EncodeSegment(seg))
		if other, ok := seen[key]; ok && other != seg {
			t.Fatalf("seed %d: segments %q and %q encode to names equal up to case (%q)", seed, other, seg, key)
		}
		seen[key] = seg
	}
}

func TestSegmentLengthGuarantee(t *testing.T) {
	// The worst case for every valid segment of at most 85 bytes is
	// 85 escaped bytes, exactly 255 bytes once encoded.
	worst := []string{
		strings.Repeat("A", 85),
		strings.Repeat("%", 85),
		strings.Repeat("é", 42) + "A",
		strings.Repeat("日", 28) + "B",
		strings.Repeat("\U0001f600", 21) + "C",
	}
	for _, seg := range worst {
		if len(seg) != 85 || !utf8.ValidString(seg) {
			t.Fatalf("bad test segment %q (%d bytes)", seg, len(seg))
		}
		if _, err := ParsePath(seg); err != nil {
			t.Errorf("85-byte segment rejected: %v", err)
		}
		if n := len(EncodeSegment(seg)); n != 255 {
			t.Errorf("EncodeSegment of %q has %d bytes, want 255", seg, n)
		}
		if _, err := ParsePath(seg + "D"); err == nil {
			t.Errorf("86-byte all-escaped segment accepted")
		}
	}
}

func ExampleEncodeSegment() {
	for _, seg := range []string{"alice@example.org", "Alice.Smith+tag@Example.org", "Zoë", ".profile", "_part.db", "100%"} {
		fmt.Println(EncodeSegment(seg))
	}
	// Output:
	// alice@example.org
	// %41lice.%53mith+tag@%45xample.org
	// %5ao%c3%ab
	// %2eprofile
	// %5fpart.db
	// 100%25
}

func TestSegmentAt(t *testing.T) {
	p := MustParsePath("mail/example.org/alice@example.org")
	for i, want := range p.Segments() {
		if got := p.segment(i); got != want {
			t.Errorf("segment(%d) = %q, want %q", i, got, want)
		}
	}
}
