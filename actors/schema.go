package actors

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fractalrt/fractal/persistence"
)

// The runtime's schema: the tables the runtime keeps in a part's file,
// beside the kind's own. Everything about them is defined here: their DDL,
// which of them a file has, and the ordered list of the runtime's
// migrations.
//
// Its version cannot be PRAGMA user_version, which is the kind's (see
// Kind.Migrations). It is kept in the other integer of the database header
// that SQLite leaves to applications, PRAGMA application_id (see
// persistence.Layer), rather than in a table of its own: persistence.Open
// reads it with user_version, before anything is written, so a file of a
// newer runtime is refused untouched and a current file costs no read
// beyond the header; and it costs no page, where a one-row table would add
// one to every file (a part of a trivial kind is two pages). Its 32 bits:
//
//	bits 31-16  schemaMagic: the file's tables are the runtime's
//	bits 15-8   the runtime's schema version (schemaVersion)
//	bits 7-0    the components installed (a component bit each)
//
// An application_id of 0 is a file written before the runtime had a
// version (or a new one): migration 1 adopts whatever tables it has.
//
// The tables come in components, installed whole. A component is installed
// at activation when the file is known to need it: a part whose kind may
// have children (the tree declares a kind below it) and the root file get
// compChildren. The others (outbox, inbox, alarms) are installed, whole and
// once in a file's life, by the first message that needs them (a durable
// send, a durable delivery, an alarm), under that message's savepoint:
// creating all ten tables and indexes in every file would make a part of a
// trivial kind six times larger (8 KiB to 48 KiB), most of whose parts never
// use them. Every later message finds the component's bit set (in p.schema,
// read at activation) and runs no DDL and no probe.
const (
	schemaMagic   = 0x6672 // "fr"
	schemaVersion = 1
)

// A component is a group of the runtime's tables, installed together, and
// its bit in the file's application_id.
type component uint8

const (
	compChildren component = 1 << iota // childrenTable, createdTable
	compOutbox                         // outboxTable (its index, and sqlite_sequence), lanesTable, deadTable
	compInbox                          // inboxTable, skippedTable
	compAlarms                         // alarmsTable
	compDeleted                        // deletedTable: installed by a parent's first deletion of a child

	compKnown = compChildren | compOutbox | compInbox | compAlarms | compDeleted
)

// componentDDL creates each component's tables. The statements are those
// that the runtime ran on first use before it had a version, so that the
// tables of an old file are the ones it would create now (and IF NOT
// EXISTS completes a component an old file has part of).
var componentDDL = []struct {
	c      component
	tables []string
	ddl    []string
}{
	{compChildren, []string{childrenTable, createdTable}, []string{
		`CREATE TABLE IF NOT EXISTS ` + childrenTable + ` (name TEXT PRIMARY KEY) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS ` + createdTable + ` (name TEXT PRIMARY KEY) WITHOUT ROWID`,
	}},
	{compOutbox, []string{outboxTable, lanesTable, deadTable}, []string{
		`CREATE TABLE IF NOT EXISTS ` + outboxTable + ` (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
			last_error TEXT NOT NULL DEFAULT '', redrive INTEGER NOT NULL DEFAULT 0)`,
		`CREATE INDEX IF NOT EXISTS ` + outboxTable + `_dest ON ` + outboxTable + ` (dest, redrive, id)`,
		`CREATE TABLE IF NOT EXISTS ` + lanesTable + ` (dest TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			next INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS ` + deadTable + ` (id INTEGER PRIMARY KEY,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL, last_error TEXT NOT NULL, died INTEGER NOT NULL)`,
	}},
	{compInbox, []string{inboxTable, skippedTable}, []string{
		`CREATE TABLE IF NOT EXISTS ` + inboxTable + ` (sender TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS ` + skippedTable + ` (sender TEXT NOT NULL, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, PRIMARY KEY (sender, epoch, seq)) WITHOUT ROWID`,
	}},
	{compAlarms, []string{alarmsTable}, []string{
		`CREATE TABLE IF NOT EXISTS ` + alarmsTable + ` (name TEXT PRIMARY KEY, due INTEGER NOT NULL, attempt INTEGER NOT NULL) WITHOUT ROWID`,
	}},
	{compDeleted, []string{deletedTable}, []string{
		`CREATE TABLE IF NOT EXISTS ` + deletedTable + ` (name TEXT PRIMARY KEY, at INTEGER NOT NULL, pending INTEGER NOT NULL) WITHOUT ROWID`,
	}},
}

// runtimeMigrations is the runtime schema's history: migration i brings
// version i to i+1, given and returning the components the file has. It
// runs at activation, in the transaction of the kind's migrations. A
// migration never edits one before it; a change of a component's tables is
// a new migration (which alters the tables of the files that have the
// component) and a change of its componentDDL.
var runtimeMigrations = []func(tx *persistence.Tx, has component) (component, error){
	adoptTables,
}

// adoptTables is migration 1: a file written before the runtime had a
// version has any subset of its tables, created on first use; each
// component of which it has a table is completed and noted.
func adoptTables(tx *persistence.Tx, has component) (component, error) {
	var names []string
	for _, d := range componentDDL {
		names = append(names, d.tables...)
	}
	q := `SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (?` + strings.Repeat(`, ?`, len(names)-1) + `)`
	args := make([]any, len(names))
	for i, n := range names {
		args[i] = n
	}
	found, err := queryStrings(tx, q, args...)
	if err != nil {
		return has, err
	}
	for _, d := range componentDDL {
		for _, t := range d.tables {
			if has&d.c == 0 && slices.Contains(found, t) {
				if err := installTables(tx, d.c); err != nil {
					return has, err
				}
				has |= d.c
			}
		}
	}
	return has, nil
}

// installTables runs the DDL of the components c.
func installTables(tx *persistence.Tx, c component) error {
	for _, d := range componentDDL {
		if c&d.c == 0 {
			continue
		}
		for _, q := range d.ddl {
			if _, err := tx.ExecContext(context.Background(), q); err != nil {
				return fmt.Errorf("runtime tables %s: %w", strings.Join(d.tables, ", "), err)
			}
		}
	}
	return nil
}

// schemaID returns the application_id of a file at schemaVersion with
// components c.
func schemaID(c component) int32 {
	return int32(schemaMagic<<16 | schemaVersion<<8 | int(c))
}

// parseSchemaID returns the runtime schema version and components that
// application_id id records, or an error for a file that is not the
// runtime's or is newer than this code.
func parseSchemaID(id int32) (version int, c component, err error) {
	if id == 0 {
		return 0, 0, nil // before the runtime had a version
	}
	u := uint32(id)
	if u>>16 != schemaMagic {
		return 0, 0, fmt.Errorf("application_id %#x is not the runtime's (PRAGMA application_id belongs to the runtime: a kind's migrations must not set it)", u)
	}
	version, c = int(u>>8&0xff), component(u&0xff)
	if version > schemaVersion || c&^compKnown != 0 {
		return 0, 0, fmt.Errorf("%w: the runtime's tables are at version %d (components %#x), this program knows versions up to %d (components %#x)",
			persistence.ErrSchemaTooNew, version, uint8(c), schemaVersion, uint8(compKnown))
	}
	return version, c, nil
}

// runtimeLayer returns the persistence.Layer that brings a file to the
// current runtime schema with at least the components want, as it is
// opened: one for each want the runtime asks for, made once.
func runtimeLayer(want component) *persistence.Layer {
	if want == compChildren {
		return childrenLayer
	}
	return plainLayer
}

var (
	plainLayer    = newRuntimeLayer(0)
	childrenLayer = newRuntimeLayer(compChildren)
)

func newRuntimeLayer(want component) *persistence.Layer {
	return &persistence.Layer{
		Check: func(id int32) (bool, error) {
			version, has, err := parseSchemaID(id)
			return version < schemaVersion || want&^has != 0, err
		},
		Migrate: func(tx *persistence.Tx, id int32) (int32, error) {
			version, has, err := parseSchemaID(id)
			if err != nil {
				return 0, err
			}
			for v := version; v < schemaVersion; v++ {
				if has, err = runtimeMigrations[v](tx, has); err != nil {
					return 0, fmt.Errorf("runtime schema version %d to %d: %w", v, v+1, err)
				}
			}
			if err := installTables(tx, want&^has); err != nil {
				return 0, err
			}
			return schemaID(has | want), nil
		},
	}
}

// components returns the components recorded in db's application_id,
// which Open has checked and migrated.
func components(db *persistence.DB) component {
	_, c, _ := parseSchemaID(db.ApplicationID())
	return c
}

// wantedComponents returns the components p's file gets at activation:
// compChildren when the tree declares a kind below p.
func (p *part) wantedComponents() component {
	if p.kind == nil || p.sys.tree.mayHaveChildren(p.path) {
		return compChildren
	}
	return 0
}

// mayHaveChildren reports whether a kind of t matches some child of p.
func (t *tree) mayHaveChildren(p Path) bool {
	segs := p.Segments()
	for _, k := range t.byDepth[len(segs)+1] {
		if covers(k.segs[:len(segs)], segs) {
			return true
		}
	}
	return false
}

// has reports whether the tables of c are in tx's file. Those of p's file
// as last committed are known (p.schema); a component installed in the
// open transaction is read from the file's header in tx, which a rollback
// of its installation restores.
func (p *part) has(tx *persistence.Tx, c component) (bool, error) {
	if p.schema&c == c {
		return true, nil
	}
	_, has, err := p.txComponents(tx)
	return has&c == c, err
}

// txComponents returns the application_id of tx's file and the
// components it records.
func (p *part) txComponents(tx *persistence.Tx) (int32, component, error) {
	var id int32
	if err := tx.QueryRowContext(context.Background(), `PRAGMA application_id`).Scan(&id); err != nil {
		return 0, 0, err
	}
	_, c, err := parseSchemaID(id)
	return id, c, err
}

// install makes sure that the tables of c are in tx's file: the first
// message of a file's life that needs them creates them, in its own
// transaction (under its savepoint, which a failure rolls back with
// them), and records them in the file's application_id. It is the only
// DDL the runtime runs outside activation.
func (p *part) install(tx *persistence.Tx, c component) error {
	if p.schema&c == c {
		return nil
	}
	id, has, err := p.txComponents(tx)
	if err != nil || has&c == c {
		return err
	}
	if id == 0 {
		// Activated with a layer, a file has the current version.
		return fmt.Errorf("actors: %s: the runtime's schema was not migrated at activation", p.path)
	}
	if err := installTables(tx, c&^has); err != nil {
		return err
	}
	_, err = tx.ExecContext(context.Background(), `PRAGMA application_id = `+strconv.Itoa(int(schemaID(has|c))))
	p.pendingC |= c
	return err
}

// schemaCommitted brings p.schema up to date once the transaction that
// installed components has ended (read is false when it was rolled back):
// the file's header says which installations it kept (a savepoint rolled
// back after an installation takes it with it). Later messages then find
// the components in p.schema and read nothing.
func (p *part) schemaCommitted(read bool) {
	if p.pendingC == 0 {
		return
	}
	p.pendingC = 0
	if !read {
		return
	}
	err := p.db.View(context.Background(), func(tx *persistence.Tx) (err error) {
		_, p.schema, err = p.txComponents(tx)
		return err
	})
	if err != nil {
		p.logger().Warn("reading the runtime's tables", "err", err) // has reads them from each transaction meanwhile
	}
}

// hasTable reports whether the table name exists in tx's file. Only
// readers of files of any age, opened read-only (System.Children), use it:
// the runtime knows its own files' tables from their schema.
func hasTable(tx *persistence.Tx, name string) (bool, error) {
	var n int
	err := tx.QueryRowContext(context.Background(), `SELECT count(*) FROM sqlite_schema WHERE name = ?`, name).Scan(&n)
	return n > 0, err
}
