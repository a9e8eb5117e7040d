package persistence

import (
	"context"
	"fmt"
)

// A Layer is a schema that a library keeps in files whose main schema
// ([Options.Migrations], versioned by PRAGMA user_version) belongs to its
// caller: the actors runtime keeps its own tables in every part's file
// this way. Its state is the one other integer of the database header
// that SQLite leaves to applications, PRAGMA application_id (32 bits),
// whose meaning the layer decides: reading it costs no page beyond the
// header, and storing it costs no page at all.
type Layer struct {
	// Check is called with the file's application_id before anything
	// is written to the file. It reports whether Migrate must run; an
	// error refuses the file, which is then left untouched, as a file
	// newer than Migrations is (it should wrap [ErrSchemaTooNew] when
	// the file was written by a newer program).
	Check func(id int32) (migrate bool, err error)
	// Migrate brings the layer up to date in Open's migration
	// transaction, before the pending Migrations. It is called with
	// the application_id read again under the write lock (and only if
	// Check, called again with it, still asks for it) and returns the
	// new one, which is written once the Migrations have run. It must
	// not end tx.
	Migrate func(tx *Tx, id int32) (int32, error)
}

// applicationID reads PRAGMA application_id.
func (db *DB) applicationID(ctx context.Context) (int32, error) {
	var v int32
	if err := db.conn.QueryRowContext(ctx, "PRAGMA application_id").Scan(&v); err != nil {
		return 0, fmt.Errorf("persistence: open %s: read application_id: %w", db.path, db.classify(err))
	}
	return v, nil
}

// ApplicationID returns the file's PRAGMA application_id as it was once
// Open had migrated [Options.Layer]; without a Layer it is not read, and
// is 0. It keeps working after Close.
func (db *DB) ApplicationID() int32 { return db.appID }
