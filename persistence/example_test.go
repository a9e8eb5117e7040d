package persistence_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fractalrt/fractal/persistence"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "persistence-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := persistence.Open(ctx, filepath.Join(dir, "accounts.db"), &persistence.Options{
		Migrations: []persistence.Migration{
			{Name: "create accounts", SQL: `
				CREATE TABLE accounts(name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
				INSERT INTO accounts VALUES ('alice', 100), ('bob', 0);`},
			{Name: "forbid overdraft", SQL: `
				CREATE TRIGGER no_overdraft BEFORE UPDATE ON accounts
				WHEN NEW.balance < 0 BEGIN SELECT RAISE(ABORT, 'overdraft'); END;`},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	fmt.Println("schema version:", db.Version())

	transfer := func(from, to string, amount int) error {
		return db.Update(ctx, func(tx *persistence.Tx) error {
			if _, err := tx.Exec(`UPDATE accounts SET balance = balance + ? WHERE name = ?`, amount, to); err != nil {
				return err
			}
			_, err := tx.Exec(`UPDATE accounts SET balance = balance - ? WHERE name = ?`, amount, from)
			return err
		})
	}
	fmt.Println("transfer 30:", transfer("alice", "bob", 30))
	fmt.Println("transfer 500 failed:", transfer("alice", "bob", 500) != nil)

	err = db.View(ctx, func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT name, balance FROM accounts ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var balance int
			if err := rows.Scan(&name, &balance); err != nil {
				return err
			}
			fmt.Println(name, balance)
		}
		return rows.Err()
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// schema version: 2
	// transfer 30: <nil>
	// transfer 500 failed: true
	// alice 70
	// bob 30
}

func ExampleTx_Savepoint() {
	dir, err := os.MkdirTemp("", "persistence-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	db, err := persistence.Open(ctx, filepath.Join(dir, "events.db"), &persistence.Options{
		Migrations: []persistence.Migration{{Name: "events", SQL: `CREATE TABLE events(msg TEXT)`}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	err = db.Update(ctx, func(tx *persistence.Tx) error {
		if _, err := tx.Exec(`INSERT INTO events VALUES ('kept')`); err != nil {
			return err
		}
		sp, err := tx.Savepoint()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO events VALUES ('undone')`); err != nil {
			return err
		}
		// Undo only what happened since the savepoint; the transaction
		// goes on.
		if err := sp.Rollback(); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO events VALUES ('also kept')`)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	err = db.View(ctx, func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT msg FROM events ORDER BY rowid`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var msg string
			if err := rows.Scan(&msg); err != nil {
				return err
			}
			fmt.Println(msg)
		}
		return rows.Err()
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// kept
	// also kept
}
