package main

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

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

	// Search asks a mailbox for the letters in its inbox that contain
	// every word of Query, in the subject or the body; the reply is
	// []Hit, best match first, at most maxHits of them. Words are
	// matched whole, ignoring case and diacritics; a word ending in '*'
	// matches every word it begins ("noodle*" finds "noodles"). Anything
	// else in Query is taken as text, never as query syntax.
	Search struct{ Query string }

	// Hit is a letter that matched a Search, with an excerpt of its
	// matching field in which the matched words are in [brackets].
	Hit struct {
		Letter
		Snippet string
	}
)

// maxHits bounds the letters one mailbox returns for a Search.
const maxHits = 20

// errEmptyQuery is the error of a Search with no word to look for.
var errEmptyQuery = errors.New("mail: search query has no words")

// ftsQuery turns the words of a Search into an FTS5 query that needs all
// of them: each word is quoted, so that nothing in it is read as FTS5
// syntax, and a trailing '*' is kept outside the quotes as a prefix match.
func ftsQuery(q string) (string, error) {
	var terms []string
	for _, w := range strings.Fields(q) {
		prefix := strings.HasSuffix(w, "*")
		w = strings.TrimRight(w, "*")
		if !strings.ContainsFunc(w, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) {
			continue // nothing the tokenizer would index
		}
		term := `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
		if prefix {
			term += "*"
		}
		terms = append(terms, term)
	}
	if len(terms) == 0 {
		return "", fmt.Errorf("%w: %q", errEmptyQuery, q)
	}
	return strings.Join(terms, " AND "), nil
}

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

// mailboxMigrations is a mailbox file's schema history. Version 1 kept the
// inbox and what was sent; version 2 indexes the inbox for Search.
var mailboxMigrations = []persistence.Migration{{
	Name: "inbox and sent",
	SQL: `CREATE TABLE inbox (id TEXT PRIMARY KEY, sender TEXT NOT NULL, subject TEXT NOT NULL,
			body TEXT NOT NULL, received_at TEXT NOT NULL);
		CREATE TABLE sent (id TEXT PRIMARY KEY, recipient TEXT NOT NULL, subject TEXT NOT NULL,
			body TEXT NOT NULL, sent_at TEXT NOT NULL, bounced TEXT)`,
}, {
	// An FTS5 index over the inbox's subjects and bodies, kept by
	// triggers. It is an external-content index (the text is stored once,
	// in inbox), so it refers to letters by rowid, and the rowids must be
	// stable: the inbox of version 1 has only an implicit rowid, which
	// VACUUM may renumber, so it is rebuilt with an INTEGER PRIMARY KEY
	// (n, in arrival order) before the letters already there are indexed.
	// Letters are matched case-insensitively and without regard to
	// diacritics ("cafe" finds "Café").
	Name: "inbox search index",
	SQL: `ALTER TABLE inbox RENAME TO inbox_v1;
		CREATE TABLE inbox (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, sender TEXT NOT NULL,
			subject TEXT NOT NULL, body TEXT NOT NULL, received_at TEXT NOT NULL);
		INSERT INTO inbox (id, sender, subject, body, received_at)
			SELECT id, sender, subject, body, received_at FROM inbox_v1 ORDER BY received_at, id;
		DROP TABLE inbox_v1;
		CREATE VIRTUAL TABLE inbox_fts USING fts5(subject, body, content='inbox', content_rowid='n',
			tokenize='unicode61 remove_diacritics 2');
		INSERT INTO inbox_fts (inbox_fts) VALUES ('rebuild');
		CREATE TRIGGER inbox_fts_insert AFTER INSERT ON inbox BEGIN
			INSERT INTO inbox_fts (rowid, subject, body) VALUES (new.n, new.subject, new.body);
		END;
		CREATE TRIGGER inbox_fts_delete AFTER DELETE ON inbox BEGIN
			INSERT INTO inbox_fts (inbox_fts, rowid, subject, body) VALUES ('delete', old.n, old.subject, old.body);
		END;
		CREATE TRIGGER inbox_fts_update AFTER UPDATE ON inbox BEGIN
			INSERT INTO inbox_fts (inbox_fts, rowid, subject, body) VALUES ('delete', old.n, old.subject, old.body);
			INSERT INTO inbox_fts (rowid, subject, body) VALUES (new.n, new.subject, new.body);
		END`,
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
	case Search:
		q, err := ftsQuery(m.Query)
		if err != nil {
			return nil, err
		}
		rows, err := c.Query(`SELECT i.id, i.sender, i.subject, i.body,
				snippet(inbox_fts, -1, '[', ']', '…', 12)
			FROM inbox_fts JOIN inbox i ON i.n = inbox_fts.rowid
			WHERE inbox_fts MATCH ? ORDER BY rank, i.n LIMIT ?`, q, maxHits)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []Hit
		for rows.Next() {
			var h Hit
			if err := rows.Scan(&h.ID, &h.From, &h.Subject, &h.Body, &h.Snippet); err != nil {
				return nil, err
			}
			out = append(out, h)
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
