package main

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// The tree: the whole ("mail") routes between domains, a domain
// ("mail/example.org") routes between its mailboxes, and a mailbox
// ("mail/example.org/alice@example.org") keeps its own mail. Every hop
// stores a message before it forwards it.
func kinds() []actors.Kind {
	return []actors.Kind{
		{Name: "internet", Pattern: "mail", Migrations: relayMigrations, Handler: actors.HandlerFunc(handleInternet)},
		{Name: "domain", Pattern: "mail/*", Migrations: domainMigrations, Handler: actors.HandlerFunc(handleDomain)},
		{Name: "mailbox", Pattern: "mail/*/*", Migrations: mailboxMigrations, Handler: actors.HandlerFunc(handleMailbox)},
	}
}

// Messages.
type (
	// Register creates an account in a domain.
	Register struct{ Address string }

	// Submit asks a mailbox to send a message; the reply is the message id.
	Submit struct{ To, Subject, Body string }

	// Deliver carries a message between hops.
	Deliver struct {
		ID, From, To, Subject, Body string
		Hops                        int
	}

	// Bounce tells a sender that a message could not be delivered.
	Bounce struct{ ID, To, Reason string }

	// List asks a mailbox for its inbox; the reply is []Letter.
	List struct{}

	// Letter is one message in an inbox.
	Letter struct{ ID, From, Subject, Body string }

	// ListSent asks a mailbox for what it sent; the reply is []Sent.
	ListSent struct{}

	// Sent is one message a mailbox sent, with the reason it bounced if it
	// did.
	Sent struct{ ID, To, Subject, Bounced string }
)

var relayMigrations = []persistence.Migration{{
	Name: "relay log",
	SQL: `CREATE TABLE relayed (
		id TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
		next_hop TEXT NOT NULL, at TEXT NOT NULL)`,
}}

var domainMigrations = append(relayMigrations[:1:1], persistence.Migration{
	Name: "accounts",
	SQL:  `CREATE TABLE accounts (address TEXT PRIMARY KEY, created_at TEXT NOT NULL)`,
})

var mailboxMigrations = []persistence.Migration{{
	Name: "inbox and sent",
	SQL: `CREATE TABLE inbox (id TEXT PRIMARY KEY, sender TEXT NOT NULL, subject TEXT NOT NULL,
			body TEXT NOT NULL, received_at TEXT NOT NULL);
		CREATE TABLE sent (id TEXT PRIMARY KEY, recipient TEXT NOT NULL, subject TEXT NOT NULL,
			body TEXT NOT NULL, sent_at TEXT NOT NULL, bounced TEXT)`,
}}

// maxHops stops a message that is routed in circles.
const maxHops = 8

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

// domainOf returns the domain of an address, or an error.
func domainOf(addr string) (string, error) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", fmt.Errorf("mail: %q is not an address", addr)
	}
	return strings.ToLower(addr[i+1:]), nil
}

func relay(c *actors.Context, d Deliver, next string) error {
	if d.Hops >= maxHops {
		return fmt.Errorf("mail: %s: too many hops", d.ID)
	}
	if _, err := c.Exec(`INSERT INTO relayed (id, sender, recipient, next_hop, at) VALUES (?, ?, ?, ?, ?)`,
		d.ID, d.From, d.To, next, now()); err != nil {
		return err
	}
	d.Hops++
	return c.Send(next, d)
}

// handleInternet routes between domains: it receives what a domain cannot
// deliver itself and passes it down to the recipient's domain.
func handleInternet(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Deliver:
		domain, err := domainOf(m.To)
		if err != nil {
			return nil, err
		}
		return nil, relay(c, m, "./"+domain)
	case Bounce:
		domain, err := domainOf(m.To)
		if err != nil {
			return nil, err
		}
		return nil, c.Send("./"+domain, m)
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// handleDomain keeps the domain's accounts and routes: to its own mailboxes
// directly, to other domains through the whole.
func handleDomain(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Register:
		domain, err := domainOf(m.Address)
		if err != nil {
			return nil, err
		}
		if domain != c.Path().Name() {
			return nil, fmt.Errorf("mail: %s does not belong to %s", m.Address, c.Path().Name())
		}
		_, err = c.Exec(`INSERT OR IGNORE INTO accounts (address, created_at) VALUES (?, ?)`, m.Address, now())
		return m.Address, err
	case Deliver:
		domain, err := domainOf(m.To)
		if err != nil {
			return nil, err
		}
		if domain != c.Path().Name() {
			return nil, relay(c, m, "..")
		}
		var one int
		err = c.QueryRow(`SELECT 1 FROM accounts WHERE address = ?`, m.To).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			// Unknown recipient: the bounce travels back like any mail.
			return nil, c.Send("..", Bounce{ID: m.ID, To: m.From, Reason: "no such account: " + m.To})
		}
		if err != nil {
			return nil, err
		}
		return nil, relay(c, m, "./"+m.To)
	case Bounce:
		domain, err := domainOf(m.To)
		if err != nil {
			return nil, err
		}
		if domain != c.Path().Name() {
			return nil, c.Send("..", m)
		}
		return nil, c.Send("./"+m.To, m)
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// handleMailbox keeps one account's mail.
func handleMailbox(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Submit:
		if _, err := domainOf(m.To); err != nil {
			return nil, err
		}
		id, err := newID(c)
		if err != nil {
			return nil, err
		}
		if _, err := c.Exec(`INSERT INTO sent (id, recipient, subject, body, sent_at) VALUES (?, ?, ?, ?, ?)`,
			id, m.To, m.Subject, m.Body, now()); err != nil {
			return nil, err
		}
		d := Deliver{ID: id, From: c.Path().Name(), To: m.To, Subject: m.Subject, Body: m.Body}
		if err := c.Send("..", d); err != nil {
			return nil, err
		}
		return id, nil
	case Deliver:
		_, err := c.Exec(`INSERT OR IGNORE INTO inbox (id, sender, subject, body, received_at) VALUES (?, ?, ?, ?, ?)`,
			m.ID, m.From, m.Subject, m.Body, now())
		return nil, err
	case Bounce:
		_, err := c.Exec(`UPDATE sent SET bounced = ? WHERE id = ?`, m.Reason, m.ID)
		return nil, err
	case List:
		rows, err := c.Query(`SELECT id, sender, subject, body FROM inbox ORDER BY received_at, id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []Letter
		for rows.Next() {
			var l Letter
			if err := rows.Scan(&l.ID, &l.From, &l.Subject, &l.Body); err != nil {
				return nil, err
			}
			out = append(out, l)
		}
		return out, rows.Err()
	case ListSent:
		rows, err := c.Query(`SELECT id, recipient, subject, coalesce(bounced, '') FROM sent ORDER BY sent_at, id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []Sent
		for rows.Next() {
			var s Sent
			if err := rows.Scan(&s.ID, &s.To, &s.Subject, &s.Bounced); err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, rows.Err()
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// newID returns an id for a message submitted by this mailbox: its address
// and a sequence number kept in its own file, so ids never repeat, across
// restarts too.
func newID(c *actors.Context) (string, error) {
	var n int64
	if err := c.QueryRow(`SELECT count(*) FROM sent`).Scan(&n); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%s", n+1, c.Path().Name()), nil
}
