package persistence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxForeignKeyProblems bounds the violations a migration error lists.
const maxForeignKeyProblems = 5

// migrate applies the pending migrations, after layer's if it has any, in
// one BEGIN IMMEDIATE transaction that also sets user_version and
// application_id. Foreign key enforcement is off while they
// run, as SQLite requires for table rebuilds, and PRAGMA foreign_key_check
// must find no violation after each of them.
func (db *DB) migrate(ctx context.Context, migrations []Migration, layer *Layer) (err error) {
	// foreign_keys cannot change inside a transaction: switch it before.
	if err := db.execSetup(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return err
	}
	defer func() {
		if _, fkErr := db.conn.ExecContext(context.Background(), "PRAGMA foreign_keys = ON"); fkErr != nil && err == nil {
			err = fmt.Errorf("persistence: open %s: PRAGMA foreign_keys = ON: %w", db.path, fkErr)
		}
	}()

	tx, err := db.begin(ctx, modeImmediate, true)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMigration, db.path, err)
	}
	var from int
	ok := false
	defer func() {
		if ok {
			return
		}
		// Failure, panic or runtime.Goexit in a migration: undo them all.
		p := recover()
		_ = tx.end(false)
		if p != nil {
			panic(p)
		}
	}()

	// Another process may have migrated the file since Open read the
	// version: read it again under the write lock.
	if err := tx.QueryRow("PRAGMA user_version").Scan(&from); err != nil {
		return fmt.Errorf("%w: %s: read user_version: %w", ErrMigration, db.path, err)
	}
	if from > len(migrations) {
		return db.tooNew(from, len(migrations))
	}
	var appID int32
	if layer != nil {
		if appID, err = db.migrateLayer(tx, layer); err != nil {
			return err
		}
	}
	for i := from; i < len(migrations); i++ {
		err := applyMigration(tx, migrations[i])
		if err == nil {
			err = foreignKeyCheck(tx)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: migration %d %s (version %d to %d): %w",
				ErrMigration, db.path, i, migrationName(migrations[i], i), i, i+1, err)
		}
	}
	if from < len(migrations) {
		if _, err := tx.Exec("PRAGMA user_version = " + strconv.Itoa(len(migrations))); err != nil {
			return fmt.Errorf("%w: %s: set user_version: %w", ErrMigration, db.path, err)
		}
	}
	if layer != nil {
		// Last: a migration that set application_id does not keep it.
		if _, err := tx.Exec("PRAGMA application_id = " + strconv.Itoa(int(appID))); err != nil {
			return fmt.Errorf("%w: %s: set application_id: %w", ErrMigration, db.path, err)
		}
	}
	ok = true
	if err := tx.end(true); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMigration, db.path, err)
	}
	db.version = len(migrations)
	if layer != nil {
		db.appID = appID
	}
	return nil
}

// migrateLayer reads the file's application_id again under the write lock
// (another process may have migrated it since Open read it) and migrates
// layer if it still asks for it; it returns the application_id to store.
func (db *DB) migrateLayer(tx *Tx, layer *Layer) (int32, error) {
	var id int32
	if err := tx.QueryRow("PRAGMA application_id").Scan(&id); err != nil {
		return 0, fmt.Errorf("%w: %s: read application_id: %w", ErrMigration, db.path, err)
	}
	pending, err := layer.Check(id)
	if err != nil {
		return 0, fmt.Errorf("persistence: open %s: %w", db.path, err)
	}
	if !pending {
		return id, nil
	}
	next, err := layer.Migrate(tx, id)
	if err == nil {
		err = foreignKeyCheck(tx)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %s: layer (application_id %#x): %w", ErrMigration, db.path, uint32(id), err)
	}
	return next, nil
}

func applyMigration(tx *Tx, m Migration) error {
	if m.Func != nil {
		return m.Func(tx)
	}
	if strings.TrimSpace(m.SQL) == "" {
		return errors.New("neither SQL nor Func is set")
	}
	_, err := tx.Exec(m.SQL)
	return err
}

func migrationName(m Migration, i int) string {
	if m.Name == "" {
		return "#" + strconv.Itoa(i)
	}
	return strconv.Quote(m.Name)
}

// foreignKeyCheck runs PRAGMA foreign_key_check and reports the first
// violations.
func foreignKeyCheck(tx *Tx) error {
	rows, err := tx.Query("PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("foreign_key_check: %w", err)
	}
	defer rows.Close()
	var problems []string
	n := 0
	for rows.Next() {
		var (
			table, parent string
			rowid         *int64
			fkid          int
		)
		if err := rows.Scan(&table, &rowid, &parent, &fkid); err != nil {
			return fmt.Errorf("foreign_key_check: %w", err)
		}
		n++
		if len(problems) < maxForeignKeyProblems {
			row := "?"
			if rowid != nil {
				row = strconv.FormatInt(*rowid, 10)
			}
			problems = append(problems, fmt.Sprintf("%s rowid %s references missing %s row", table, row, parent))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("foreign_key_check: %w", err)
	}
	if n > 0 {
		return fmt.Errorf("foreign_key_check found %d violation(s): %s", n, strings.Join(problems, "; "))
	}
	return nil
}
