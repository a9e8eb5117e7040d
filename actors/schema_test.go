package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// The application_id of a file at runtime schema version 1, and the bits
// of its components.
const (
	runtimeV1    = 0x6672_0100
	compChildren = 1
	compOutbox   = 2
	compInbox    = 4
	compAlarms   = 8
)

// oldDDL returns the statements with which the runtime created table
// before it had a schema version.
func oldDDL(t *testing.T, table string) string {
	t.Helper()
	for _, old := range actors.OldRuntimeTables {
		if old.Table == table {
			return old.DDL
		}
	}
	t.Fatalf("no old DDL for %s", table)
	return ""
}

// writeFile creates the SQLite file at path with migrations applied and
// stmts run, as a runtime without a schema version left it.
func writeFile(t *testing.T, path string, migrations []persistence.Migration, stmts ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := persistence.Open(context.Background(), path, &persistence.Options{Migrations: migrations})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(context.Background(), func(tx *persistence.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// runtimeTables returns the runtime's tables in the file of path, and its
// application_id.
func runtimeTables(t *testing.T, h *actortest.Harness, path string) (string, int64) {
	t.Helper()
	var names []string
	for _, r := range h.Query(path, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE '\_fractal\_%' ESCAPE '\' ORDER BY name`) {
		names = append(names, r[0].(string))
	}
	return strings.Join(names, " "), h.QueryInt(path, `PRAGMA application_id`)
}

// schemaKinds are the durable test kinds, whose handler also logs the
// alarms it receives (as -1) and fails dSendFail after sending.
type dSendFail struct{ To string }

func schemaKinds() (actors.Options, *downParts) {
	down := &downParts{}
	dh := durableHandler(down, new(atomic.Int64))
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case actors.Alarm:
			_, err := c.Exec(`INSERT INTO log (n) VALUES (-1)`)
			return nil, err
		case dSendFail:
			if err := c.SendDurable(m.To, dAdd{100}); err != nil {
				return nil, err
			}
			return nil, errTest
		}
		return dh(c, msg)
	})
	return actors.Options{
		Kinds: []actors.Kind{
			{Name: "bank", Pattern: "d", Migrations: durableMigrations, Handler: h},
			{Name: "account", Pattern: "d/*", Migrations: durableMigrations, Handler: h},
		},
		Delivery: fastDelivery,
	}, down
}

// A data directory written before the runtime's tables had a version,
// each file with some of them (never all), opens as it is: the durable
// messages waiting in an outbox are delivered, once, in order after the one
// the receiver's inbox says it handled; a due alarm fires; the children
// recorded are listed; and a parent whose record of created files is
// missing records them.
func TestOldDataDirectoryOpens(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	nowNs, pastNs := now.UnixNano(), now.Add(-time.Second).UnixNano()
	body := func(n int) string {
		_, b, err := actors.EncodeMessage(dAdd{n})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("x'%x'", b)
	}
	file := func(p string) string { return actors.MustParsePath(p).File(dir) }

	// The root and the parent d: children, no record of created files.
	writeFile(t, filepath.Join(dir, "_fractal.db"), nil,
		oldDDL(t, "_fractal_children"), `INSERT INTO _fractal_children VALUES ('d')`)
	writeFile(t, file("d"), durableMigrations,
		oldDDL(t, "_fractal_children"), `INSERT INTO _fractal_children VALUES ('a'), ('b'), ('c')`)
	// d/a sent d/b #1 and #2 in lane epoch 1 (neither acknowledged), and
	// has an alarm due: an outbox, lanes, dead letters and alarms; no inbox.
	writeFile(t, file("d/a"), durableMigrations,
		oldDDL(t, "_fractal_outbox"), oldDDL(t, "_fractal_lanes"), oldDDL(t, "_fractal_dead"), oldDDL(t, "_fractal_alarms"),
		fmt.Sprintf(`INSERT INTO _fractal_outbox (id, dest, epoch, seq, kind, ref, name, body, created, next_at)
			VALUES (1, 'd/b', 1, 1, 0, 0, 'test.dAdd', %s, %d, %d), (2, 'd/b', 1, 2, 0, 0, 'test.dAdd', %s, %d, %d)`,
			body(1), nowNs, nowNs, body(2), nowNs, nowNs),
		fmt.Sprintf(`INSERT INTO _fractal_lanes VALUES ('d/b', 1, 3, %d)`, nowNs),
		fmt.Sprintf(`INSERT INTO _fractal_alarms VALUES ('wake', %d, 0)`, pastNs))
	// d/b handled #1 (its acknowledgement was lost): an inbox, without
	// the table of skipped messages.
	writeFile(t, file("d/b"), durableMigrations,
		`UPDATE counter SET n = 1`, `INSERT INTO log (n) VALUES (1)`,
		oldDDL(t, "_fractal_inbox"), fmt.Sprintf(`INSERT INTO _fractal_inbox VALUES ('d/a', 1, 1, %d)`, nowNs))
	// The alarm index knows both of d/a's alarms.
	writeFile(t, filepath.Join(dir, "_fractal_alarms.db"), []persistence.Migration{{Name: "alarm index", SQL: `
			CREATE TABLE alarms (path TEXT NOT NULL, name TEXT NOT NULL, due INTEGER NOT NULL,
				PRIMARY KEY (path, name)) WITHOUT ROWID;
			CREATE INDEX alarms_due ON alarms (due)`}},
		fmt.Sprintf(`INSERT INTO alarms VALUES ('d/a', '_fractal.outbox', %d), ('d/a', 'wake', %d)`, now.Add(time.Hour).UnixNano(), pastNs))

	opts, _ := schemaKinds()
	h := actortest.Open(t, dir, opts)
	checkChildren := func() {
		t.Helper()
		for path, want := range map[string]string{"": "[d]", "d": "[a b c]"} {
			got, err := h.System().Children(context.Background(), path)
			if err != nil || fmt.Sprint(got) != want {
				t.Errorf("Children(%q) = %v, %v; want %s", path, got, err, want)
			}
		}
	}
	checkChildren() // read from the old files, before any activation

	// Nothing is asked of d/a: the alarm index wakes it.
	actortest.Eventually(t, func() bool {
		return h.QueryInt("d/b", `SELECT n FROM counter`) == 3 && outboxLen(h, "d/a") == 0 &&
			h.QueryInt("d/a", `SELECT count(*) FROM log WHERE n = -1`) == 1
	})
	if got := fmt.Sprint(h.Query("d/b", `SELECT n FROM log ORDER BY i`)); got != "[[1] [2]]" {
		t.Fatalf("d/b handled %s, want #1 once (before) and #2 once", got)
	}
	// d's created files: recorded by the table its migration added.
	actortest.Eventually(t, func() bool {
		return fmt.Sprint(h.Query("d", `SELECT name FROM _fractal_created ORDER BY name`)) == "[[a] [b]]"
	})
	checkChildren()

	for path, want := range map[string]struct {
		tables string
		id     int64
	}{
		"d":   {"_fractal_children _fractal_created", runtimeV1 | compChildren},
		"d/a": {"_fractal_alarms _fractal_dead _fractal_lanes _fractal_outbox", runtimeV1 | compOutbox | compAlarms},
		"d/b": {"_fractal_inbox _fractal_skipped", runtimeV1 | compInbox},
	} {
		if tables, id := runtimeTables(t, h, path); tables != want.tables || id != want.id {
			t.Errorf("%s: tables %q, application_id %#x; want %q, %#x", path, tables, id, want.tables, want.id)
		}
	}

	// The lane goes on after a restart of the process: #3, nothing again.
	h.Reopen()
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{5}})
	actortest.Eventually(t, func() bool { return h.QueryInt("d/b", `SELECT n FROM counter`) == 8 && outboxLen(h, "d/a") == 0 })
	if got := fmt.Sprint(h.Query("d/b", `SELECT n FROM log ORDER BY i`)); got != "[[1] [2] [5]]" {
		t.Fatalf("d/b handled %s after the restart", got)
	}
	if n, err := h.System().Undelivered(context.Background(), "d/a"); err != nil || n != 0 {
		t.Fatalf("Undelivered(d/a) = %d, %v", n, err)
	}
	checkChildren()
}

// A new file gets only the runtime's tables it needs: none for a leaf,
// the records of children for a part whose kind may have children; the
// outbox and inbox come with the first message that uses them (alarms:
// see TestOldDataDirectoryOpens and the alarm tests).
func TestNewFilesGetTheTablesTheyNeed(t *testing.T) {
	opts, _ := schemaKinds()
	opts.Kinds = append(opts.Kinds, actors.Kind{Name: "leaf", Pattern: "d/*/*", Migrations: durableMigrations, Handler: opts.Kinds[0].Handler})
	h := actortest.New(t, opts)
	h.MustRequest("d/a/x", dAdd{1})
	for path, want := range map[string]struct {
		tables string
		id     int64
	}{
		"d":     {"_fractal_children _fractal_created", runtimeV1 | compChildren},
		"d/a":   {"_fractal_children _fractal_created", runtimeV1 | compChildren},
		"d/a/x": {"", runtimeV1},
	} {
		if tables, id := runtimeTables(t, h, path); tables != want.tables || id != want.id {
			t.Errorf("%s: tables %q, application_id %#x; want %q, %#x", path, tables, id, want.tables, want.id)
		}
	}

	h.MustRequest("d/a/x", dSend{To: "d/a/y", N: []int{1}})
	actortest.Eventually(t, func() bool { return outboxLen(h, "d/a/x") == 0 })
	for path, want := range map[string]struct {
		tables string
		id     int64
	}{
		"d/a/x": {"_fractal_dead _fractal_lanes _fractal_outbox", runtimeV1 | compOutbox},
		"d/a/y": {"_fractal_inbox _fractal_skipped", runtimeV1 | compInbox},
	} {
		if tables, id := runtimeTables(t, h, path); tables != want.tables || id != want.id {
			t.Errorf("%s: tables %q, application_id %#x; want %q, %#x", path, tables, id, want.tables, want.id)
		}
	}
}

// A message whose handler installed the outbox and then failed takes the
// installation with it; the next durable send installs it again, in the
// same activation, and is delivered.
func TestFailedFirstDurableSendInstallsNothing(t *testing.T) {
	opts, _ := schemaKinds()
	h := actortest.New(t, opts)
	if _, err := h.Request("d/a", dSendFail{To: "d/b"}); !errors.Is(err, errTest) {
		t.Fatalf("dSendFail: %v", err)
	}
	if tables, id := runtimeTables(t, h, "d/a"); tables != "" || id != runtimeV1 {
		t.Fatalf("after the failed send: tables %q, application_id %#x", tables, id)
	}
	h.MustRequest("d/a", dSend{To: "d/b", N: []int{4}})
	actortest.Eventually(t, func() bool { return outboxLen(h, "d/a") == 0 })
	if n := h.QueryInt("d/b", `SELECT n FROM counter`); n != 4 {
		t.Fatalf("d/b's counter: %d, want 4", n)
	}
	if tables, id := runtimeTables(t, h, "d/a"); tables != "_fractal_dead _fractal_lanes _fractal_outbox" || id != runtimeV1|compOutbox {
		t.Fatalf("after the send: tables %q, application_id %#x", tables, id)
	}
}

// A file whose runtime schema is newer than this code, or whose
// application_id is not the runtime's, is refused at activation and left
// as it was, without a -wal or -shm file.
func TestNewerRuntimeSchemaRefusedUntouched(t *testing.T) {
	for _, tc := range []struct {
		id      int64
		tooNew  bool
		mention string
	}{
		{runtimeV1 + 0x100, true, "version 2"}, // version 2
		{runtimeV1 | 0x80, true, "components"}, // a component this code does not know
		{7, false, "0x7"},                      // not the runtime's
	} {
		t.Run(fmt.Sprintf("%#x", tc.id), func(t *testing.T) {
			dir := t.TempDir()
			h := actortest.Open(t, dir, actors.Options{Kinds: testKinds()})
			h.MustRequest("c/a", add{1})
			h.Close()
			f := h.File("c/a")
			orig := h.QueryInt("c/a", `PRAGMA application_id`)
			writeFile(t, f, counterMigrations, fmt.Sprintf(`PRAGMA application_id = %d`, tc.id))
			sum := fileSum(t, f)

			h.Reopen()
			_, err := h.Request("c/a", get{})
			if !errors.Is(err, actors.ErrActivation) || errors.Is(err, persistence.ErrSchemaTooNew) != tc.tooNew ||
				!strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("request to the file: %v; want ErrActivation, ErrSchemaTooNew %v, mentioning %q", err, tc.tooNew, tc.mention)
			}
			if counter(t, h, "c") != 0 { // the parent still serves
				t.Fatal("parent's counter")
			}
			for _, suffix := range []string{"-wal", "-shm"} {
				if _, err := os.Stat(f + suffix); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s beside the refused file: %v", suffix, err)
				}
			}
			if fileSum(t, f) != sum {
				t.Fatal("the refused file was modified")
			}
			// Close and CheckDir (at cleanup) must not fail on it either:
			// put the original back.
			h.Close()
			writeFile(t, f, counterMigrations, fmt.Sprintf(`PRAGMA application_id = %d`, orig))
			h.Reopen()
		})
	}
}
