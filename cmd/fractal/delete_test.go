package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// What a crash in the middle of a deletion leaves (see actors.System.Delete):
// the parent's tombstone for bob@a.org with bob's directory still there, and
// the half-removed trash of an earlier deletion. check passes and does not
// count the trash; tree marks bob as deleted.
func TestHalfDeletedPart(t *testing.T) {
	h := system(t)
	h.Close()
	ctx := context.Background()
	parent := actors.MustParsePath("mail/a.org")
	db, err := persistence.Open(ctx, parent.File(h.Dir()), &persistence.Options{Migrations: kinds()[1].Migrations})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(ctx, func(tx *persistence.Tx) error {
		_, err := tx.Exec(`CREATE TABLE ` + deletedTable + ` (name TEXT PRIMARY KEY, at INTEGER NOT NULL, pending INTEGER NOT NULL) WITHOUT ROWID;
			INSERT INTO ` + deletedTable + ` VALUES ('bob@a.org', 0, 1), ('dave@a.org', 0, 1);
			DELETE FROM _fractal_children WHERE name IN ('bob@a.org', 'dave@a.org')`)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	trash := filepath.Join(parent.Dir(h.Dir()), "_deleted.0123456789abcdef0123456789abcdef")
	if err := os.MkdirAll(filepath.Join(trash, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(actors.MustParsePath("mail/b.net/carol@b.net").File(h.Dir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trash, actors.PartFileName), good[:len(good)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(trash) // a torn file, which the harness's own check would read

	code, out, _ := fractal(t, "check", h.Dir())
	if code != 0 || !strings.Contains(out, "6 parts checked, 6 ok, 0 failed") {
		t.Fatalf("check: %d %s", code, out)
	}
	code, out, errs := fractal(t, "tree", "-json", h.Dir(), "mail/a.org")
	var entries []treeEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || code != 0 {
		t.Fatalf("tree -json: %d %v %s\n%s", code, err, errs, out)
	}
	for _, e := range entries {
		if e.Deleted != (e.Path == "mail/a.org/bob@a.org") {
			t.Errorf("tree: %s deleted %v", e.Path, e.Deleted)
		}
	}
	code, out, _ = fractal(t, "tree", h.Dir())
	if code != 0 || !strings.Contains(out, "1 (deleted)") || strings.Count(out, "(deleted)") != 1 {
		t.Fatalf("tree: %d\n%s", code, out)
	}
}
