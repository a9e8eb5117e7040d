package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

func TestDemoRuns(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), &out, dir, nil, nil, nil); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"delivered:", "invalid path: true", "unknown type: true",
		"mail/example.org/bob@example.org/_part.db",
		`search "noodle*" across mail/example.org/*: 2 hit(s) in 2 mailbox(es) asked`,
		`search "lunch" across mail/*/*: 3 hit(s) in 3 mailbox(es) asked`,
		"mail/example.net/carol@example.net: 1 hit(s)", "[Café] Zoë"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "error:") {
		t.Errorf("a mailbox failed to search:\n%s", out.String())
	}
	actortest.CheckDir(t, dir)
	// A second run on the same directory works too.
	out.Reset()
	if err := run(context.Background(), &out, dir, nil, nil, nil); err != nil {
		t.Fatalf("second run failed: %v\n%s", err, out.String())
	}
}

// Mail within a domain stays inside the domain; mail to another domain is
// relayed by the whole. The relay logs in each part's own file show the way.
func TestRouting(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: kinds()})
	for _, a := range []string{"alice@example.org", "bob@example.org", "carol@example.net"} {
		d, _ := domainOf(a)
		h.MustRequest("mail/"+d, Register{Address: a})
	}
	local := h.MustRequest("mail/example.org/alice@example.org", Submit{To: "bob@example.org", Subject: "a"}).(string)
	remote := h.MustRequest("mail/example.org/alice@example.org", Submit{To: "carol@example.net", Subject: "b"}).(string)
	actortest.Eventually(t, func() bool {
		bob := h.MustRequest("mail/example.org/bob@example.org", List{}).([]Letter)
		carol := h.MustRequest("mail/example.net/carol@example.net", List{}).([]Letter)
		return hasID(bob, local) && hasID(carol, remote)
	})
	relayed := func(part, id string) int64 {
		return h.QueryInt(part, "SELECT count(*) FROM relayed WHERE id = ?", id)
	}
	if n := relayed("mail", local); n != 0 {
		t.Errorf("local mail went through the whole (%d relays)", n)
	}
	if n := relayed("mail/example.org", local); n != 1 {
		t.Errorf("local mail relayed %d times by its domain, want 1", n)
	}
	for _, part := range []string{"mail/example.org", "mail", "mail/example.net"} {
		if n := relayed(part, remote); n != 1 {
			t.Errorf("remote mail relayed %d times by %s, want 1", n, part)
		}
	}
}

func TestBadSubmitChangesNothing(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: kinds()})
	h.MustRequest("mail/example.org", Register{Address: "alice@example.org"})
	h.MustRequest("mail/example.org/alice@example.org", List{})
	if _, err := h.Request("mail/example.org/alice@example.org", Submit{To: "nobody"}); err == nil {
		t.Fatal("submit to a non-address succeeded")
	}
	if n := h.QueryInt("mail/example.org/alice@example.org", "SELECT count(*) FROM sent"); n != 0 {
		t.Fatalf("failed submit left %d rows", n)
	}
}

// letters delivers each letter straight to the mailbox of its recipient
// (to), as the recipient's domain does.
func letters(t *testing.T, h *actortest.Harness, ls ...Deliver) {
	t.Helper()
	for _, l := range ls {
		to, err := mailboxPath(l.To)
		if err != nil {
			t.Fatal(err)
		}
		h.MustRequest(to, l)
	}
}

var searchLetters = []Deliver{
	{ID: "1.bob@example.org", From: "bob@example.org", To: "alice@example.org", Subject: "re: lunch?", Body: "Noon works. Shall we try the new noodle bar?"},
	{ID: "2.bob@example.org", From: "bob@example.org", To: "alice@example.org", Subject: "minutes", Body: "Attached, as promised."},
	{ID: "1.carol@example.net", From: "carol@example.net", To: "bob@example.org", Subject: "noodle recipe", Body: "Simmer the broth, then add the noodles."},
	{ID: "1.alice@example.org", From: "alice@example.org", To: "carol@example.net", Subject: "conference", Body: "Lunch is provided on both days."},
	{ID: "2.carol@example.net", From: "carol@example.net", To: "alice@example.org", Subject: "Café Zoë", Body: "Meet me at Café Zoë."},
}

// hitIDs returns the ids of the letters of a Search reply, sorted.
func hitIDs(t *testing.T, reply any) []string {
	t.Helper()
	hits, ok := reply.([]Hit)
	if !ok && reply != nil {
		t.Fatalf("search replied %T, want []Hit", reply)
	}
	var ids []string
	for _, h := range hits {
		ids = append(ids, h.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestSearchOneMailbox(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: kinds()})
	letters(t, h, searchLetters...)
	alice := "mail/example.org/alice@example.org"
	for query, want := range map[string]string{
		"lunch":            "[1.bob@example.org]",
		"LUNCH?":           "[1.bob@example.org]",
		"noodle":           "[1.bob@example.org]",
		"noodle*":          "[1.bob@example.org]",
		"cafe":             "[2.carol@example.net]", // diacritics ignored
		"zoe cafe":         "[2.carol@example.net]",
		"noon lunch":       "[1.bob@example.org]",
		"noon attached":    "[]", // every word must match
		"promised":         "[2.bob@example.org]",
		`"AND" OR NEAR( *`: "[]", // FTS5 syntax is taken as text
	} {
		got := hitIDs(t, h.MustRequest(alice, Search{Query: query}))
		if fmt.Sprint(got) != want {
			t.Errorf("search %q: %v, want %s", query, got, want)
		}
	}
	reply := h.MustRequest(alice, Search{Query: "noodle"}).([]Hit)
	if len(reply) != 1 || reply[0].Subject != "re: lunch?" || !strings.Contains(reply[0].Snippet, "[noodle]") {
		t.Errorf("hit %+v, want the letter with [noodle] in its snippet", reply)
	}
	for _, q := range []string{"", "  ", "?! *"} {
		if _, err := h.Request(alice, Search{Query: q}); !errors.Is(err, errEmptyQuery) {
			t.Errorf("search %q: %v, want errEmptyQuery", q, err)
		}
	}
}

// Search everywhere: a domain's mailboxes, then every mailbox, each
// answering from its own index.
func TestSearchEverywhere(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: kinds()})
	for _, a := range []string{"alice@example.org", "bob@example.org", "carol@example.net"} {
		d, _ := domainOf(a)
		h.MustRequest("mail/"+d, Register{Address: a})
	}
	letters(t, h, searchLetters...)
	search := func(pattern, query string) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), actortest.Timeout)
		defer cancel()
		found := map[string]string{}
		for r := range h.System().Scatter(ctx, pattern, Search{Query: query}, nil) {
			if r.Err != nil {
				t.Fatalf("search %q across %s: %s: %v", query, pattern, r.Path, r.Err)
			}
			found[r.Path.String()] = fmt.Sprint(hitIDs(t, r.Reply))
		}
		return found
	}
	for _, c := range []struct {
		pattern, query, want string
	}{
		{"mail/example.org/*", "noodle*", "map[mail/example.org/alice@example.org:[1.bob@example.org] mail/example.org/bob@example.org:[1.carol@example.net]]"},
		{"mail/*/*", "lunch", "map[mail/example.net/carol@example.net:[1.alice@example.org] mail/example.org/alice@example.org:[1.bob@example.org] mail/example.org/bob@example.org:[]]"},
		{"mail/example.net/*", "noodle*", "map[mail/example.net/carol@example.net:[]]"},
		{"mail/*/bob@example.org", "broth", "map[mail/example.org/bob@example.org:[1.carol@example.net]]"},
		{"mail/example.com/*", "lunch", "map[]"},
	} {
		if got := fmt.Sprint(search(c.pattern, c.query)); got != c.want {
			t.Errorf("search %q across %s:\n got %s\nwant %s", c.query, c.pattern, got, c.want)
		}
	}
}

// A mailbox file of version 1 (no search index) is upgraded when it is
// next activated, and its old letters are found.
func TestSearchIndexMigration(t *testing.T) {
	dir := t.TempDir()
	v1 := kinds()
	for i := range v1 {
		if v1[i].Name == "mailbox" {
			v1[i].Migrations = mailboxMigrations[:1]
		}
	}
	alice := "mail/example.org/alice@example.org"
	old := actortest.Open(t, dir, actors.Options{Kinds: v1})
	letters(t, old, searchLetters...)
	if v := old.QueryInt(alice, "PRAGMA user_version"); v != 1 {
		t.Fatalf("old mailbox at version %d", v)
	}
	before := old.MustRequest(alice, List{}).([]Letter)
	old.Close()

	h := actortest.Open(t, dir, actors.Options{Kinds: kinds()})
	if got := fmt.Sprint(hitIDs(t, h.MustRequest(alice, Search{Query: "cafe"}))); got != "[2.carol@example.net]" {
		t.Fatalf("search of a migrated mailbox: %s", got)
	}
	if v := h.QueryInt(alice, "PRAGMA user_version"); v != 2 {
		t.Fatalf("migrated mailbox at version %d", v)
	}
	if after := h.MustRequest(alice, List{}).([]Letter); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("inbox changed by the migration:\n%v\n%v", before, after)
	}
	// New letters are indexed, and a letter delivered twice is still
	// kept once.
	letters(t, h, Deliver{ID: "3.bob@example.org", From: "bob@example.org", To: "alice@example.org", Subject: "cafe again?", Body: "Same time."},
		searchLetters[0])
	if got := fmt.Sprint(hitIDs(t, h.MustRequest(alice, Search{Query: "cafe"}))); got != "[2.carol@example.net 3.bob@example.org]" {
		t.Fatalf("search after a new letter: %s", got)
	}
	if n := h.QueryInt(alice, "SELECT count(*) FROM inbox"); n != 4 {
		t.Fatalf("inbox holds %d letters, want 4", n)
	}
	// The index agrees with the table: every letter once, the one
	// delivered twice included.
	for q, want := range map[string]int64{"noon OR minutes OR cafe": 4, "noodle": 1} {
		if n := h.QueryInt(alice, "SELECT count(*) FROM inbox_fts WHERE inbox_fts MATCH ?", q); n != want {
			t.Errorf("index finds %d letters for %q, want %d", n, q, want)
		}
	}
}

// With a registry, the demo's system exports its metrics while it is held
// open, on the same registry across its close and reopen.
func TestDemoMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var got map[string]bool
	hold := func(*actors.System) error {
		mfs, err := reg.Gather()
		if err != nil {
			return err
		}
		got = map[string]bool{}
		for _, mf := range mfs {
			got[mf.GetName()] = true
		}
		return nil
	}
	var out bytes.Buffer
	if err := run(context.Background(), &out, t.TempDir(), nil, reg, hold); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, name := range []string{"fractal_messages_total", "fractal_active_parts", "fractal_scatter_parts", "fractal_barrier_syncs_total"} {
		if !got[name] {
			t.Errorf("%s not exported while the demo's system is open", name)
		}
	}
	if n := testutil.CollectAndCount(reg); n != 0 {
		t.Errorf("%d metrics still registered after the demo closed its system", n)
	}
}
