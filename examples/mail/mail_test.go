package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

func TestDemoRuns(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), &out, dir, nil); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"delivered:", "invalid path: true", "unknown type: true",
		"mail/example.org/bob@example.org/_part.db"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	actortest.CheckDir(t, dir)
	// A second run on the same directory works too.
	out.Reset()
	if err := run(context.Background(), &out, dir, nil); err != nil {
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
