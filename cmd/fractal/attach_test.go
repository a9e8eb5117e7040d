package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fractal sql opens parts read-only, but a query can end the read
// transaction, turn query_only off and ATTACH any file read-write: it then
// writes another part's file (beside a running system), or creates files
// anywhere.
func TestSQLCannotWriteThroughAttach(t *testing.T) {
	h := system(t)
	h.Close()
	victim := h.File("mail/a.org/bob@a.org")
	before := sum(t, victim)
	outside := filepath.Join(t.TempDir(), "outside.db")
	copied := filepath.Join(t.TempDir(), "copy.db")
	for _, q := range []string{
		fmt.Sprintf("COMMIT; PRAGMA query_only = 0; ATTACH '%s' AS y; DELETE FROM y.kv", victim),
		fmt.Sprintf("ATTACH '%s' AS x", outside),
		fmt.Sprintf("COMMIT; PRAGMA query_only = 0; VACUUM INTO '%s'", copied),
	} {
		code, _, errs := fractal(t, "sql", h.Dir(), "mail/a.org", q)
		t.Logf("%s: exit %d %s", q, code, errs)
	}
	if sum(t, victim) != before {
		t.Error("fractal sql changed another part's file")
	}
	for _, f := range []string{outside, copied} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("fractal sql created %s, outside the data directory", f)
		}
	}
}
