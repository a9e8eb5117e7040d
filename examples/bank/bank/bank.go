// Package bank is the kinds of fractal's bank example: a bank, its
// branches, their accounts, one SQLite file each.
//
//	bank                     the whole: routes between branches
//	bank/<branch>            a branch: keeps its total, a store derived from its accounts' events
//	bank/<branch>/<account>  an account: its balance, its transfers, its ledger
//
// A transfer is a saga of durable messages. The source account debits
// itself, stores the transfer as pending and calls the target with a Credit
// (actors.Context.Call), all in one transaction. The target credits itself,
// or refuses (a frozen account), and its answer comes back as a Reply: the
// source marks the transfer done, or refunds itself. Every change of a
// balance also sends a BalanceChanged event to the account's branch
// (actors.Context.SendDurable), which keeps its total from them: a store
// derived from its children's events, exactly once, consistent after any
// crash.
package bank

import (
	"errors"
	"fmt"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// Messages. Clients send Deposit, Transfer, Freeze and Audit to accounts,
// and Audit to branches; Credit, Reply and BalanceChanged travel between
// parts as durable messages.
type (
	// Deposit adds Amount to an account (a client request).
	Deposit struct {
		ID     string // unique: a repeated ID is acknowledged, not applied again
		Amount int64
	}

	// Transfer moves Amount from the account it is sent to, to the account
	// To (a path). The reply is TransferAccepted or an error wrapping
	// ErrInsufficientFunds; the credit follows, durably.
	Transfer struct {
		ID     string // unique: a repeated ID is answered from the first
		To     string
		Amount int64
	}

	// Credit is the source account's durable call to the target.
	Credit struct {
		Transfer string
		Amount   int64
	}

	// BalanceChanged is an account's event to its branch.
	BalanceChanged struct{ Delta int64 }

	// Freeze makes an account refuse (Frozen) or accept credits.
	Freeze struct{ Frozen bool }

	// Audit asks an account for its AccountAudit, a branch for its total
	// (an int64).
	Audit struct{}
)

// TransferAccepted is the reply to a Transfer that debited its source.
type TransferAccepted struct{ ID string }

// AccountAudit is an account's own view of itself.
type AccountAudit struct {
	Balance  int64
	Pending  int            // transfers out waiting for their credit's answer
	Done     int            // transfers out credited
	Failed   int            // transfers out refused and refunded
	Ledger   map[string]int // per transfer ID and entry kind ("debit", "credit", "refund"): the count of ledger rows
	Deposits int64

	Transfers map[string]TransferState // the transfers out, by ID
}

// TransferState is a transfer as its source account knows it.
type TransferState struct {
	To     string
	Amount int64
	State  string // pending, done or failed
}

// Errors the accounts answer.
var (
	ErrInsufficientFunds = errors.New("bank: insufficient funds")
	ErrFrozen            = errors.New("bank: account frozen")
)

func init() {
	actors.MustRegisterMessage[Credit]("bank.Credit")
	actors.MustRegisterMessage[BalanceChanged]("bank.BalanceChanged")
}

// Kinds returns the bank's kinds, for actors.Options.Kinds.
func Kinds() []actors.Kind {
	return []actors.Kind{
		{Name: "bank", Pattern: "bank", Handler: actors.HandlerFunc(func(*actors.Context, any) (any, error) {
			return nil, nil // routes only
		})},
		{Name: "branch", Pattern: "bank/*", Migrations: branchMigrations, Handler: actors.HandlerFunc(branch)},
		{Name: "account", Pattern: "bank/*/*", Migrations: accountMigrations, Handler: actors.HandlerFunc(account)},
	}
}

var branchMigrations = []persistence.Migration{{Name: "total", SQL: `
	CREATE TABLE total (n INTEGER NOT NULL); INSERT INTO total VALUES (0)`}}

var accountMigrations = []persistence.Migration{{Name: "account", SQL: `
	CREATE TABLE account (balance INTEGER NOT NULL, frozen INTEGER NOT NULL, deposits INTEGER NOT NULL);
	INSERT INTO account VALUES (0, 0, 0);
	CREATE TABLE deposits (id TEXT PRIMARY KEY, amount INTEGER NOT NULL);
	CREATE TABLE transfers (id TEXT PRIMARY KEY, dest TEXT NOT NULL, amount INTEGER NOT NULL,
		call INTEGER NOT NULL UNIQUE, state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')));
	-- No uniqueness here on purpose: an entry applied twice would show.
	CREATE TABLE ledger (seq INTEGER PRIMARY KEY, transfer TEXT NOT NULL, kind TEXT NOT NULL, amount INTEGER NOT NULL)`}}

func branch(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case BalanceChanged:
		_, err := c.Exec(`UPDATE total SET n = n + ?`, m.Delta)
		return nil, err
	case Audit:
		var n int64
		err := c.QueryRow(`SELECT n FROM total`).Scan(&n)
		return n, err
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

func account(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Deposit:
		return nil, deposit(c, m)
	case Transfer:
		return transfer(c, m)
	case Credit:
		return nil, credit(c, m)
	case actors.Reply:
		return nil, settle(c, m)
	case Freeze:
		_, err := c.Exec(`UPDATE account SET frozen = ?`, m.Frozen)
		return nil, err
	case Audit:
		return audit(c)
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// move changes the balance by delta and tells the branch.
func move(c *actors.Context, delta int64) error {
	if _, err := c.Exec(`UPDATE account SET balance = balance + ?`, delta); err != nil {
		return err
	}
	return c.SendDurable("..", BalanceChanged{Delta: delta})
}

func deposit(c *actors.Context, m Deposit) error {
	if m.Amount <= 0 {
		return fmt.Errorf("bank: deposit of %d", m.Amount)
	}
	res, err := c.Exec(`INSERT OR IGNORE INTO deposits (id, amount) VALUES (?, ?)`, m.ID, m.Amount)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // a repeated deposit
	}
	if _, err := c.Exec(`UPDATE account SET deposits = deposits + ?`, m.Amount); err != nil {
		return err
	}
	return move(c, m.Amount)
}

func transfer(c *actors.Context, m Transfer) (any, error) {
	if m.Amount <= 0 {
		return nil, fmt.Errorf("bank: transfer of %d", m.Amount)
	}
	var state string
	err := c.QueryRow(`SELECT state FROM transfers WHERE id = ?`, m.ID).Scan(&state)
	if err == nil {
		return TransferAccepted{ID: m.ID}, nil // a client's retry
	}
	var balance int64
	if err := c.QueryRow(`SELECT balance FROM account`).Scan(&balance); err != nil {
		return nil, err
	}
	if balance < m.Amount {
		return nil, fmt.Errorf("%w: %d < %d", ErrInsufficientFunds, balance, m.Amount)
	}
	if err := move(c, -m.Amount); err != nil {
		return nil, err
	}
	call, err := c.Call(m.To, Credit{Transfer: m.ID, Amount: m.Amount})
	if err != nil {
		return nil, err
	}
	if _, err := c.Exec(`INSERT INTO transfers (id, dest, amount, call, state) VALUES (?, ?, ?, ?, 'pending')`, m.ID, m.To, m.Amount, call); err != nil {
		return nil, err
	}
	if _, err := c.Exec(`INSERT INTO ledger (transfer, kind, amount) VALUES (?, 'debit', ?)`, m.ID, -m.Amount); err != nil {
		return nil, err
	}
	return TransferAccepted{ID: m.ID}, nil
}

func credit(c *actors.Context, m Credit) error {
	var frozen bool
	if err := c.QueryRow(`SELECT frozen FROM account`).Scan(&frozen); err != nil {
		return err
	}
	if frozen {
		return ErrFrozen // the answer to the call: the source refunds itself
	}
	if _, err := c.Exec(`INSERT INTO ledger (transfer, kind, amount) VALUES (?, 'credit', ?)`, m.Transfer, m.Amount); err != nil {
		return err
	}
	return move(c, m.Amount)
}

// settle records the target's answer to a transfer's credit.
func settle(c *actors.Context, r actors.Reply) error {
	var id string
	var amount int64
	err := c.QueryRow(`SELECT id, amount FROM transfers WHERE call = ? AND state = 'pending'`, r.ID).Scan(&id, &amount)
	if err != nil {
		return fmt.Errorf("bank: answer to call %d: %w", r.ID, err)
	}
	if r.Err() == nil {
		_, err := c.Exec(`UPDATE transfers SET state = 'done' WHERE id = ?`, id)
		return err
	}
	if _, err := c.Exec(`UPDATE transfers SET state = 'failed' WHERE id = ?`, id); err != nil {
		return err
	}
	if _, err := c.Exec(`INSERT INTO ledger (transfer, kind, amount) VALUES (?, 'refund', ?)`, id, amount); err != nil {
		return err
	}
	return move(c, amount)
}

func audit(c *actors.Context) (AccountAudit, error) {
	a := AccountAudit{Ledger: map[string]int{}, Transfers: map[string]TransferState{}}
	if err := c.QueryRow(`SELECT balance, deposits FROM account`).Scan(&a.Balance, &a.Deposits); err != nil {
		return a, err
	}
	rows, err := c.Query(`SELECT id, dest, amount, state FROM transfers`)
	if err != nil {
		return a, err
	}
	for rows.Next() {
		var id string
		var t TransferState
		if err := rows.Scan(&id, &t.To, &t.Amount, &t.State); err != nil {
			return a, err
		}
		a.Transfers[id] = t
		switch t.State {
		case "pending":
			a.Pending++
		case "done":
			a.Done++
		case "failed":
			a.Failed++
		}
	}
	if err := rows.Close(); err != nil {
		return a, err
	}
	rows, err = c.Query(`SELECT transfer, kind, count(*) FROM ledger GROUP BY transfer, kind`)
	if err != nil {
		return a, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, kind string
		var n int
		if err := rows.Scan(&id, &kind, &n); err != nil {
			return a, err
		}
		a.Ledger[id+" "+kind] = n
	}
	return a, rows.Err()
}
