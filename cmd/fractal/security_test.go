package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// Every command reads the data directory and writes nothing there: not
// tree, not check, not backup, and not sql whatever the statement (data,
// schema, pragmas, maintenance, several statements, query_only turned
// off). The files are compared byte for byte.
func TestCommandsDoNotWriteTheData(t *testing.T) {
	h := system(t)
	h.Close()
	dir := h.Dir()
	before := snapshot(t, dir)
	for _, args := range [][]string{
		{"tree", dir}, {"tree", "-json", dir, "mail/a.org"}, {"check", dir},
		{"backup", dir, filepath.Join(t.TempDir(), "b")},
		{"backup", dir, filepath.Join(t.TempDir(), "b"), "mail/a.org"},
		{"sql", dir, "mail/*/*", "SELECT * FROM kv"},
	} {
		if code, _, errs := fractal(t, args...); code != 0 {
			t.Errorf("%q: exit %d: %s", args, code, errs)
		}
	}
	for _, q := range []string{
		"INSERT INTO kv VALUES ('x', 'y')", "UPDATE kv SET v = 'x'", "DELETE FROM kv", "REPLACE INTO kv VALUES ('owner', 'x')",
		"CREATE TABLE z (a)", "DROP TABLE kv", "ALTER TABLE kv ADD COLUMN w", "CREATE INDEX i ON kv (v)",
		"CREATE TRIGGER tr AFTER INSERT ON kv BEGIN SELECT 1; END", "CREATE VIEW vw AS SELECT 1",
		"PRAGMA user_version = 7", "PRAGMA application_id = 7", "PRAGMA journal_mode = DELETE", "PRAGMA page_size = 512",
		"PRAGMA auto_vacuum = FULL", "PRAGMA schema_version = 1", "PRAGMA wal_checkpoint(TRUNCATE)",
		"VACUUM", "REINDEX", "ANALYZE", "PRAGMA optimize", "PRAGMA incremental_vacuum",
		"PRAGMA query_only = 0; DELETE FROM kv", "SELECT 1; DELETE FROM kv", "PRAGMA writable_schema = ON; DELETE FROM sqlite_schema",
		"BEGIN IMMEDIATE", "SAVEPOINT s; DELETE FROM kv; RELEASE s",
	} {
		for _, target := range []string{"mail/a.org", "mail/*/*"} {
			code, _, _ := fractal(t, "sql", dir, target, q)
			if code == 2 {
				t.Errorf("%s on %s: usage error", q, target)
			}
		}
	}
	if k, ok := sameSnapshot(before, snapshot(t, dir)); !ok {
		t.Fatalf("a command changed the data directory: %s", k)
	}
	// And a plain write is refused with a clear message.
	if code, _, errs := fractal(t, "sql", dir, "mail/a.org", "DELETE FROM kv"); code != 1 || !strings.Contains(errs, "writes are refused") {
		t.Errorf("DELETE: exit %d, %s", code, errs)
	}
}
