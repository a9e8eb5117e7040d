package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// fuzzCommands are the commands FuzzCommand runs, by index; the last one
// is an unknown command. "move" talks to etcd and is left out.
var fuzzCommands = []string{"tree", "sql", "check", "backup", "restore", "help"}

// snapshot returns the digest of every file under dir, by relative path,
// except SQLite's -wal and -shm files, which a read-only open may create
// (empty) next to a database.
func snapshot(t testing.TB, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel+"/"] = [32]byte{}
			return nil
		}
		if strings.HasSuffix(p, "-wal") || strings.HasSuffix(p, "-shm") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(a, b map[string][32]byte) (string, bool) {
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return k, false
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return k, false
		}
	}
	return "", true
}

// FuzzCommand runs the fractal command with fuzzed flags, part paths,
// patterns, queries and extra arguments against a data directory and a
// backup of it. The command must not panic, must exit 0, 1 or 2, must
// leave the data directory and the backup exactly as they were (every
// command reads them only), and must write nothing but where it was told
// to (a backup's or a restore's fresh destination): the working directory
// stays empty. The directories are the harness's, so that no input can
// make the fuzzer write outside its temporary directories.
func FuzzCommand(f *testing.F) {
	h := actortest.New(f, actors.Options{Kinds: kinds()})
	for _, p := range []string{"mail", "mail/a.org", "mail/a.org/Alice@A.org", "mail/b.net/carol@b.net"} {
		h.MustRequest(p, put{"owner", p})
	}
	h.Close()
	data := h.Dir()
	backup := filepath.Join(f.TempDir(), "backup")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"backup", data, backup}, &out, &errb); code != 0 {
		f.Fatalf("backup: %d %s", code, errb.String())
	}
	wantData, wantBackup := snapshot(f, data), snapshot(f, backup)

	for _, s := range []struct {
		cmd                       uint8
		flags, path, query, extra string
	}{
		{0, "", "", "", ""},
		{0, "-json", "mail/a.org", "", ""},
		{0, "", "mail/../..", "", ""},
		{1, "-format=csv", "mail/a.org/Alice@A.org", "SELECT k, v FROM kv", ""},
		{1, "-format=json -parallel=2", "mail/*/*", "SELECT v FROM kv", ""},
		{1, "", "mail/*", "DELETE FROM kv", ""},
		{1, "", "mail/a.org", "DROP TABLE kv", ""},
		{1, "", "mail/a.org", "PRAGMA user_version = 9", ""},
		{1, "", "mail/a.org", "PRAGMA query_only = 0; INSERT INTO kv VALUES ('x', 'y')", ""},
		{1, "", "mail/a.org", "VACUUM", ""},
		{1, "", "mail/a.org", "REINDEX; ANALYZE", ""},
		{1, "", "../../etc", "SELECT 1", ""},
		{1, "", "/etc/passwd", "SELECT 1", ""},
		{1, "", "mail/*/../*", "SELECT 1", ""},
		{1, "", "*/*/*/*", "SELECT 1", ""},
		{1, "-format=xml", "mail", "SELECT 1", ""},
		{1, "", "mail\x00a", "SELECT 1", ""},
		{2, "-parallel=-1", "", "", ""},
		{2, "", "", "", "extra"},
		{3, "", "mail/a.org", "", ""},
		{3, "-parallel=1", "", "", ""},
		{3, "", "..", "", ""},
		{3, "--", "mail", "", ""},
		{4, "", "", "", ""},
		{4, "-parallel=3", "", "", "more"},
		{5, "", "", "", ""},
		{6, "", "move", "", ""},
		{6, "-", "tree", "", ""},
	} {
		f.Add(s.cmd, s.flags, s.path, s.query, s.extra)
	}

	f.Fuzz(func(t *testing.T, cmd uint8, flags, path, query, extra string) {
		work := t.TempDir()
		t.Chdir(work) // a relative path that escapes the harness lands here
		dest := filepath.Join(t.TempDir(), "dest")
		var args []string
		name := "x-" + path // never a real command
		if int(cmd) < len(fuzzCommands) {
			name = fuzzCommands[cmd]
		}
		args = append(args, name)
		for _, fl := range strings.Fields(flags) {
			if strings.HasPrefix(fl, "-") { // a flag (or "-", "--"); never a directory of its own
				args = append(args, fl)
			}
		}
		switch name {
		case "tree":
			args = append(args, data)
			if path != "" {
				args = append(args, path)
			}
		case "sql":
			args = append(args, data, path, query)
		case "check":
			args = append(args, data)
		case "backup":
			args = append(args, data, dest)
			if path != "" {
				args = append(args, path)
			}
		case "restore":
			args = append(args, backup, dest)
		}
		if extra != "" {
			args = append(args, extra)
		}
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr)
		if code < 0 || code > 2 {
			t.Fatalf("%q: exit %d", args, code)
		}
		if name == "help" && code != 0 {
			t.Fatalf("%q: exit %d", args, code)
		}
		if k, ok := sameSnapshot(wantData, snapshot(t, data)); !ok {
			t.Fatalf("%q changed the data directory (%s)\nstdout: %s\nstderr: %s", args, k, stdout.String(), stderr.String())
		}
		if k, ok := sameSnapshot(wantBackup, snapshot(t, backup)); !ok {
			t.Fatalf("%q changed the backup it read (%s)", args, k)
		}
		if entries, err := os.ReadDir(work); err != nil || len(entries) > 0 {
			t.Fatalf("%q wrote into the working directory: %v %v", args, entries, err)
		}
	})
}
