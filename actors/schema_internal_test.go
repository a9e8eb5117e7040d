package actors

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

// OldRuntimeTables is how the runtime created its tables before it had a
// schema version, on first use, statement for statement (table, DDL, and
// a row of the kind it held). Tests build such files with it: they must
// open unchanged.
var OldRuntimeTables = []struct{ Table, DDL, Row string }{
	{"_fractal_children", `CREATE TABLE IF NOT EXISTS _fractal_children (name TEXT PRIMARY KEY) WITHOUT ROWID`,
		`INSERT INTO _fractal_children VALUES ('x')`},
	{"_fractal_created", `CREATE TABLE IF NOT EXISTS _fractal_created (name TEXT PRIMARY KEY) WITHOUT ROWID`,
		`INSERT INTO _fractal_created VALUES ('x')`},
	{"_fractal_outbox", `CREATE TABLE IF NOT EXISTS _fractal_outbox (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
			last_error TEXT NOT NULL DEFAULT '', redrive INTEGER NOT NULL DEFAULT 0);
		CREATE INDEX IF NOT EXISTS _fractal_outbox_dest ON _fractal_outbox (dest, redrive, id)`,
		`INSERT INTO _fractal_outbox (dest, epoch, seq, kind, ref, name, body, created, next_at) VALUES ('y', 1, 1, 0, 0, 'n', x'7b7d', 1, 1)`},
	{"_fractal_lanes", `CREATE TABLE IF NOT EXISTS _fractal_lanes (dest TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			next INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`INSERT INTO _fractal_lanes VALUES ('y', 1, 2, 1)`},
	{"_fractal_dead", `CREATE TABLE IF NOT EXISTS _fractal_dead (id INTEGER PRIMARY KEY,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL, last_error TEXT NOT NULL, died INTEGER NOT NULL)`,
		`INSERT INTO _fractal_dead VALUES (7, 'y', 1, 1, 0, 0, 'n', x'7b7d', 1, 3, 'e', 2)`},
	{"_fractal_inbox", `CREATE TABLE IF NOT EXISTS _fractal_inbox (sender TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`INSERT INTO _fractal_inbox VALUES ('z', 1, 4, 1)`},
	{"_fractal_skipped", `CREATE TABLE IF NOT EXISTS _fractal_skipped (sender TEXT NOT NULL, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, PRIMARY KEY (sender, epoch, seq)) WITHOUT ROWID`,
		`INSERT INTO _fractal_skipped VALUES ('z', 1, 2)`},
	{"_fractal_alarms", `CREATE TABLE IF NOT EXISTS _fractal_alarms (name TEXT PRIMARY KEY, due INTEGER NOT NULL, attempt INTEGER NOT NULL) WITHOUT ROWID`,
		`INSERT INTO _fractal_alarms VALUES ('a', 1, 0)`},
}

// componentOf returns the component of one of the runtime's tables.
func componentOf(t *testing.T, table string) component {
	for _, d := range componentDDL {
		if slices.Contains(d.tables, table) {
			return d.c
		}
	}
	t.Fatalf("table %s is in no component", table)
	return 0
}

// A file with any subset of the tables the runtime created on first use,
// each with a row, is adopted at activation: the components it has a table of are
// completed and recorded, the rows stay, and no other table appears. The
// next activation writes nothing.
func TestOldFilesAdopted(t *testing.T) {
	dir := t.TempDir()
	kind := []persistence.Migration{{SQL: `CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)`}}
	ctx := context.Background()
	// Components are adopted one by one: every subset of each
	// component's tables, beside none or all of the other tables.
	all := 1<<len(OldRuntimeTables) - 1
	var sets []int
	for _, d := range componentDDL {
		var mine int
		for i, old := range OldRuntimeTables {
			if slices.Contains(d.tables, old.Table) {
				mine |= 1 << i
			}
		}
		for sub := range all + 1 {
			if sub&^mine == 0 {
				sets = append(sets, sub, sub|all&^mine)
			}
		}
	}
	slices.Sort(sets)
	for i, set := range slices.Compact(sets) {
		want := component(i%2) * compChildren // a part whose kind may have children, or not
		path := filepath.Join(dir, fmt.Sprintf("%d-%d.db", set, want))
		db, err := persistence.Open(ctx, path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: kind})
		if err != nil {
			t.Fatal(err)
		}
		var has component
		err = db.Update(ctx, func(tx *persistence.Tx) error {
			if _, err := tx.Exec(`INSERT INTO kv VALUES ('k', 'v')`); err != nil {
				return err
			}
			for i, old := range OldRuntimeTables {
				if set&(1<<i) == 0 {
					continue
				}
				has |= componentOf(t, old.Table)
				if _, err := tx.Exec(old.DDL + `; ` + old.Row); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = db.Close()
		}
		if err != nil {
			t.Fatal(err)
		}

		db, err = persistence.Open(ctx, path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: kind, Layer: runtimeLayer(want)})
		if err != nil {
			t.Fatalf("tables %b: %v", set, err)
		}
		if got := components(db); got != has|want || db.ApplicationID() != schemaID(has|want) {
			t.Fatalf("tables %b: components %b (application_id %#x), want %b", set, got, db.ApplicationID(), has|want)
		}
		err = db.View(ctx, func(tx *persistence.Tx) error {
			tables, err := queryStrings(tx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE '\_fractal\_%' ESCAPE '\' ORDER BY name`)
			if err != nil {
				return err
			}
			var wantTables []string
			for _, d := range componentDDL {
				if d.c&(has|want) != 0 {
					wantTables = append(wantTables, d.tables...)
				}
			}
			slices.Sort(wantTables)
			if !slices.Equal(tables, wantTables) {
				return fmt.Errorf("tables %q, want %q", tables, wantTables)
			}
			var rows int
			for i, old := range OldRuntimeTables {
				n := 0
				if set&(1<<i) != 0 {
					n = 1
				}
				if err := tx.QueryRow(`SELECT count(*) FROM ` + old.Table).Scan(&rows); err != nil && n > 0 {
					return err
				}
				if n > 0 && rows != n {
					return fmt.Errorf("%s has %d rows, want %d", old.Table, rows, n)
				}
			}
			if err := tx.QueryRow(`SELECT count(*) FROM kv`).Scan(&rows); err != nil || rows != 1 {
				return fmt.Errorf("kv: %d rows, %v", rows, err)
			}
			return nil
		})
		if err == nil {
			err = db.Close()
		}
		if err != nil {
			t.Fatalf("tables %b: %v", set, err)
		}

		db, err = persistence.Open(ctx, path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: kind, Layer: runtimeLayer(want)})
		if err != nil {
			t.Fatal(err)
		}
		if db.WroteAtOpen() {
			t.Fatalf("tables %b: a current file was written at activation", set)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		os.Remove(path)
	}
}

// The runtime's tables are created by the schema alone: nowhere else
// in the runtime does a statement create a table or look for one.
func TestNoDDLOutsideSchema(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "schema.go" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"IF NOT EXISTS", "sqlite_schema", "sqlite_master"} {
			if strings.Contains(string(b), s) {
				t.Errorf("%s: %q outside schema.go", f, s)
			}
		}
	}
}
