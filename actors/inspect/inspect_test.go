package inspect_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/actors/inspect"
	"github.com/fractalrt/fractal/persistence"
)

type boom struct{}

func harness(t *testing.T) *actortest.Harness {
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		if _, ok := msg.(boom); ok {
			panic("boom")
		}
		_, err := c.Exec(`INSERT INTO t VALUES (1)`)
		return nil, err
	})
	m := []persistence.Migration{{SQL: `CREATE TABLE t (x)`}}
	ha := actortest.New(t, actors.Options{Kinds: []actors.Kind{
		{Name: "whole", Pattern: "mail", Handler: h, Migrations: m},
		{Name: "domain", Pattern: "mail/*", Handler: h, Migrations: m},
		{Name: "box", Pattern: "mail/*/*", Handler: h, Migrations: m},
	}})
	for _, p := range []string{"mail/a.org/alice", "mail/a.org/bob", "mail/b.net/carol"} {
		ha.MustRequest(p, struct{}{})
	}
	return ha
}

func get(t *testing.T, srv *httptest.Server, path string, v any) int {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return resp.StatusCode
}

func TestAPI(t *testing.T) {
	h := harness(t)
	if _, err := h.Request("mail/a.org/bob", boom{}); err == nil {
		t.Fatal("boom did not fail")
	}
	srv := httptest.NewServer(inspect.Handler(h.System(), nil))
	defer srv.Close()

	var list struct {
		Parts []actors.PartInfo `json:"parts"`
	}
	if code := get(t, srv, "/api/children?path=", &list); code != 200 || len(list.Parts) != 1 || list.Parts[0].Path != "mail" || list.Parts[0].Children != 2 {
		t.Fatalf("root children: %d %+v", code, list)
	}
	if code := get(t, srv, "/api/children?path=mail/a.org", &list); code != 200 || fmt.Sprint(len(list.Parts)) != "2" {
		t.Fatalf("mail/a.org children: %d %+v", code, list)
	}
	var bob actors.PartInfo
	actortest.Eventually(t, func() bool {
		get(t, srv, "/api/part?path=mail/a.org/bob", &bob)
		return bob.Active && bob.Failures == 1
	})
	if bob.Kind != "box" || bob.Bytes == 0 || !strings.Contains(bob.LastError, "boom") {
		t.Fatalf("bob: %+v", bob)
	}
	var e map[string]string
	if code := get(t, srv, "/api/part?path=../../etc/passwd", &e); code != 400 || !strings.Contains(e["error"], "invalid path") {
		t.Fatalf("invalid path: %d %v", code, e)
	}
	// The page itself: self-contained, no external resource.
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "api/children") || strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://") {
		t.Fatalf("page refers elsewhere or lacks its script")
	}
}

func TestActionsOnlyWhenAllowed(t *testing.T) {
	h := harness(t)
	ro := httptest.NewServer(inspect.Handler(h.System(), nil))
	defer ro.Close()
	resp, err := http.Post(ro.URL+"/api/restart?path=mail/a.org/alice", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("restart on a read-only handler: %d", resp.StatusCode)
	}
	for _, op := range []string{"redrive", "discard"} {
		resp, err := http.Post(ro.URL+"/api/dead/"+op+"?path=mail/a.org/alice&id=1", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s on a read-only handler: %d", op, resp.StatusCode)
		}
	}
	rw := httptest.NewServer(inspect.Handler(h.System(), &inspect.Options{AllowActions: true}))
	defer rw.Close()
	resp, err = http.Post(rw.URL+"/api/restart?path=mail/a.org/alice", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("restart allowed: %d", resp.StatusCode)
	}
}

type (
	sendTo struct{ To string }
	refuse struct{}
)

func init() { actors.MustRegisterMessage[refuse]("inspect_test.refuse") }

func TestDeadLetters(t *testing.T) {
	var fixed atomic.Bool
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case sendTo:
			return nil, c.SendDurable(m.To, refuse{})
		case refuse:
			if !fixed.Load() {
				return nil, errors.New("refused")
			}
			_, err := c.Exec(`INSERT INTO t VALUES (1)`)
			return nil, err
		}
		return nil, nil
	})
	m := []persistence.Migration{{SQL: `CREATE TABLE t (x)`}}
	ha := actortest.New(t, actors.Options{
		Kinds: []actors.Kind{
			{Name: "whole", Pattern: "q", Handler: h, Migrations: m},
			{Name: "leaf", Pattern: "q/*", Handler: h, Migrations: m},
		},
		Delivery: actors.Delivery{MaxAttempts: 1},
	})
	ha.MustRequest("q/a", sendTo{To: "q/b"})
	srv := httptest.NewServer(inspect.Handler(ha.System(), &inspect.Options{AllowActions: true}))
	defer srv.Close()
	var out struct{ Letters []actors.DeadLetter }
	actortest.Eventually(t, func() bool {
		return get(t, srv, "/api/dead?path=q/a", &out) == 200 && len(out.Letters) == 1
	})
	l := out.Letters[0]
	if l.To != "q/b" || l.Type != "inspect_test.refuse" || l.Error != "refused" || l.Attempts != 1 {
		t.Fatalf("dead letter %+v", l)
	}
	post := func(path string) int {
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(fmt.Sprintf("/api/dead/redrive?path=q/a&id=%d", l.ID+1)); code != 404 {
		t.Fatalf("redrive of an unknown letter: %d", code)
	}
	fixed.Store(true)
	if code := post(fmt.Sprintf("/api/dead/redrive?path=q/a&id=%d", l.ID)); code != 200 {
		t.Fatalf("redrive: %d", code)
	}
	actortest.Eventually(t, func() bool { return ha.QueryInt("q/b", `SELECT count(*) FROM t`) == 1 })
	if get(t, srv, "/api/dead?path=q/a", &out); len(out.Letters) != 0 {
		t.Fatalf("dead letters after redrive: %+v", out.Letters)
	}
}
