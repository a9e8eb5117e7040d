package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

type put struct{ K, V string }

func kinds() []actors.Kind {
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		m := msg.(put)
		_, err := c.Exec(`INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)`, m.K, m.V)
		return nil, err
	})
	m := []persistence.Migration{{SQL: `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`}}
	return []actors.Kind{
		{Name: "top", Pattern: "mail", Handler: h, Migrations: m},
		{Name: "domain", Pattern: "mail/*", Handler: h, Migrations: m},
		{Name: "box", Pattern: "mail/*/*", Handler: h, Migrations: m},
	}
}

// system returns a running system with a few parts.
func system(t *testing.T) *actortest.Harness {
	h := actortest.New(t, actors.Options{Kinds: kinds()})
	for _, p := range []string{"mail", "mail/a.org", "mail/a.org/Alice@A.org", "mail/a.org/bob@a.org", "mail/b.net/carol@b.net"} {
		h.MustRequest(p, put{"owner", p})
	}
	return h
}

func fractal(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestTree(t *testing.T) {
	h := system(t)
	code, out, errs := fractal(t, "tree", h.Dir())
	if code != 0 {
		t.Fatalf("tree: %d %s", code, errs)
	}
	for _, want := range []string{"mail ", "a.org", "Alice@A.org", "carol@b.net"} {
		if !strings.Contains(out, want) {
			t.Errorf("tree lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = fractal(t, "tree", "-json", h.Dir(), "mail/a.org")
	var entries []treeEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 {
		t.Fatalf("tree -json: %d %v\n%s", code, err, out)
	}
	if len(entries) != 3 || entries[0].Path != "mail/a.org" || entries[0].Version != 1 || entries[0].Bytes == 0 {
		t.Fatalf("tree -json of mail/a.org: %+v", entries)
	}
}

func TestSQL(t *testing.T) {
	h := system(t)
	code, out, errs := fractal(t, "sql", "-format", "csv", h.Dir(), "mail/a.org/Alice@A.org", "SELECT k, v FROM kv")
	if code != 0 || out != "k,v\nowner,mail/a.org/Alice@A.org\n" {
		t.Fatalf("sql one part: %d %q %s", code, out, errs)
	}
	code, out, _ = fractal(t, "sql", "-format", "json", h.Dir(), "mail/*/*", "SELECT v FROM kv")
	var rows []map[string]string
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 3 {
		t.Fatalf("sql pattern: %d %v %s", code, err, out)
	}
	for _, r := range rows {
		if r["part"] != r["v"] {
			t.Errorf("row tagged %q holds %q", r["part"], r["v"])
		}
	}
	code, out, _ = fractal(t, "sql", h.Dir(), "mail/*", "SELECT count(*) AS n FROM kv")
	if code != 0 || !strings.Contains(out, "part") || !strings.Contains(out, "mail/b.net") {
		t.Fatalf("sql table: %d\n%s", code, out)
	}
}

func TestSQLRefusesWrites(t *testing.T) {
	h := system(t)
	h.Close()
	file := h.File("mail/a.org")
	before := sum(t, file)
	for _, q := range []string{"DELETE FROM kv", "INSERT INTO kv VALUES ('x', 'y')", "DROP TABLE kv", "CREATE TABLE z (a)"} {
		code, _, errs := fractal(t, "sql", h.Dir(), "mail/a.org", q)
		if code != 1 || !strings.Contains(errs, "writes are refused") {
			t.Errorf("%s: exit %d, %s", q, code, errs)
		}
	}
	if sum(t, file) != before {
		t.Fatal("a refused write changed the file")
	}
}

func sum(t *testing.T, file string) [32]byte {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestCheck(t *testing.T) {
	h := system(t)
	code, out, _ := fractal(t, "check", h.Dir())
	if code != 0 || !strings.Contains(out, "6 parts checked, 6 ok, 0 failed") {
		t.Fatalf("check: %d %s", code, out)
	}
	h.Close()
	file := h.File("mail/b.net/carol@b.net")
	good, _ := os.ReadFile(file)
	bad := bytes.Clone(good)
	for i := 100; i < len(bad); i++ {
		bad[i] = byte(i)
	}
	os.WriteFile(file, bad, 0o644)
	code, out, _ = fractal(t, "check", h.Dir())
	if code != 1 || !strings.Contains(out, "FAIL mail/b.net/carol@b.net") || !strings.Contains(out, "1 failed") {
		t.Fatalf("check of a corrupt part: %d %s", code, out)
	}
	os.WriteFile(file, good, 0o644) // for the harness's own check
}

// A backup taken while the system runs, restored elsewhere, holds every
// part; restore refuses a directory a system has open.
func TestBackupRestore(t *testing.T) {
	h := system(t)
	dest := t.TempDir()
	code, out, errs := fractal(t, "backup", h.Dir(), dest)
	if code != 0 || !strings.Contains(out, "8 files backed up, 0 failed") {
		t.Fatalf("backup: %d %s %s", code, out, errs)
	}
	code, _, errs = fractal(t, "restore", dest, h.Dir())
	if code != 1 || !strings.Contains(errs, "in use") {
		t.Fatalf("restore into a running system: %d %s", code, errs)
	}
	restored := t.TempDir()
	if code, out, errs = fractal(t, "restore", dest, restored); code != 0 {
		t.Fatalf("restore: %d %s %s", code, out, errs)
	}
	h2 := actortest.Open(t, restored, actors.Options{Kinds: kinds()})
	children, err := h2.System().Children(context.Background(), "mail/a.org")
	if err != nil || fmt.Sprint(children) != "[Alice@A.org bob@a.org]" {
		t.Fatalf("restored children: %v %v", children, err)
	}
	if got := h2.Query("mail/b.net/carol@b.net", "SELECT v FROM kv"); fmt.Sprint(got) != "[[mail/b.net/carol@b.net]]" {
		t.Fatalf("restored part holds %v", got)
	}
	// A subtree backup.
	sub := t.TempDir()
	if code, out, _ = fractal(t, "backup", h.Dir(), sub, "mail/a.org"); code != 0 || !strings.Contains(out, "3 files backed up") {
		t.Fatalf("subtree backup: %d %s", code, out)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"sql", "x"}, {"tree"}, {"sql", "-format", "xml", "a", "b", "c"}} {
		if code, _, _ := fractal(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := fractal(t, "sql", t.TempDir(), "../../etc", "SELECT 1"); code != 1 || !strings.Contains(errs, "invalid path") {
		t.Errorf("sql on an invalid path: %d %s", code, errs)
	}
}
