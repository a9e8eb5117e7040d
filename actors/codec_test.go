package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

type codecMsg struct {
	To     string
	Amount int64
	Tags   []string
}

type codecOther struct{ N int }

func init() {
	actors.MustRegisterMessage[codecMsg]("test.codecMsg")
	actors.MustRegisterMessage[*codecOther]("test.codecOther")
}

func TestMessageCodecRoundTrip(t *testing.T) {
	in := codecMsg{To: "bank/b1/a2", Amount: -42, Tags: []string{"x"}}
	name, data, err := actors.EncodeMessage(in)
	if err != nil {
		t.Fatal(err)
	}
	if name != "test.codecMsg" {
		t.Fatalf("name %q", name)
	}
	out, err := actors.DecodeMessage(name, data)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := out.(codecMsg)
	if !ok || got.To != in.To || got.Amount != in.Amount || len(got.Tags) != 1 {
		t.Fatalf("decoded %#v (%T)", out, out)
	}
	// A pointer type decodes to a pointer.
	name, data, err = actors.EncodeMessage(&codecOther{N: 7})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := actors.DecodeMessage(name, data); err != nil || out.(*codecOther).N != 7 {
		t.Fatalf("decoded %#v, %v", out, err)
	}
}

func TestMessageCodecErrors(t *testing.T) {
	if _, _, err := actors.EncodeMessage(struct{ X int }{1}); !errors.Is(err, actors.ErrUnregisteredMessage) {
		t.Fatalf("unregistered type: %v", err)
	}
	if _, _, err := actors.EncodeMessage(nil); !errors.Is(err, actors.ErrUnregisteredMessage) {
		t.Fatalf("nil: %v", err)
	}
	if _, err := actors.DecodeMessage("test.nope", []byte(`{}`)); !errors.Is(err, actors.ErrUnregisteredMessage) {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := actors.DecodeMessage("test.codecMsg", []byte(`{"Amount": "x"`)); err == nil {
		t.Fatal("malformed data decoded")
	}
	big := codecMsg{To: strings.Repeat("a", actors.MaxMessageSize)}
	if _, _, err := actors.EncodeMessage(big); !errors.Is(err, actors.ErrMessageTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := actors.DecodeMessage("test.codecMsg", make([]byte, actors.MaxMessageSize+1)); !errors.Is(err, actors.ErrMessageTooLarge) {
		t.Fatalf("oversized decode: %v", err)
	}
	if err := actors.RegisterMessage[codecOther]("test.codecMsg"); err == nil {
		t.Fatal("a name reused for another type was accepted")
	}
	if err := actors.RegisterMessage[codecMsg]("test.codecMsg2"); err == nil {
		t.Fatal("a type registered under a second name was accepted")
	}
	if err := actors.RegisterMessage[codecMsg]("test.codecMsg"); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	if err := actors.RegisterMessage[error]("test.error"); err == nil {
		t.Fatal("an interface type was accepted")
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add("test.codecMsg", []byte(`{"To":"a","Amount":1,"Tags":["x"]}`))
	f.Add("test.codecOther", []byte(`null`))
	f.Add("nope", []byte(`{}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		msg, err := actors.DecodeMessage(name, data)
		if err != nil {
			return
		}
		// What decodes encodes again, under the same name.
		n2, _, err := actors.EncodeMessage(msg)
		if err != nil || n2 != name {
			t.Fatalf("re-encoding %#v: %q, %v", msg, n2, err)
		}
	})
}

// fakeRemote owns every path under "c/remote": it answers them itself.
type fakeRemote struct {
	calls atomic.Int64
	mu    sync.Mutex
	paths []string
}

func (r *fakeRemote) Local(p actors.Path) bool {
	return !actors.MustParsePath("c/remote").Contains(p)
}

func (r *fakeRemote) Request(ctx context.Context, p actors.Path, msg any) (any, error) {
	r.calls.Add(1)
	r.mu.Lock()
	r.paths = append(r.paths, p.String())
	r.mu.Unlock()
	return "remote:" + p.String(), nil
}

func TestRemoteTakesWhatIsNotLocal(t *testing.T) {
	r := &fakeRemote{}
	h := actortest.New(t, actors.Options{Kinds: testKinds(), Remote: r})
	if v := h.MustRequest("c/b", add{1}); v != 1 {
		t.Fatalf("local request: %v", v)
	}
	v, err := h.Request("c/remote", add{1})
	if err != nil || v != "remote:c/remote" {
		t.Fatalf("remote request: %v, %v", v, err)
	}
	// A handler's Send to a remote part goes through Remote too, after its commit.
	h.MustRequest("c/b", forward{To: "c/remote/x"})
	actortest.Eventually(t, func() bool { return r.calls.Load() == 2 })
	if h.Exists("c/remote") || h.Exists("c/remote/x") {
		t.Fatal("a remote part was created here")
	}
}

// parentElsewhere serves "c" on another node and every part below it here,
// as a cluster does with parts above its placement depth.
type parentElsewhere struct{ fakeRemote }

func (r *parentElsewhere) Local(p actors.Path) bool { return p.String() != "c" }

// A new part whose parent is served by another node does not send that
// node its runtime bookkeeping (the note that the child's file exists):
// the parent's record is kept by the node that has the child's file.
func TestChildCreatedStaysHome(t *testing.T) {
	r := &parentElsewhere{}
	h := actortest.New(t, actors.Options{Kinds: testKinds(), Remote: r})
	if v := h.MustRequest("c/b", add{1}); v != 1 {
		t.Fatalf("local request: %v", v)
	}
	h.MustRequest("c/b", add{1})
	if err := h.System().Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := r.calls.Load(); n != 0 {
		t.Fatalf("Remote.Request called %d times (%v): runtime messages left for another node", n, r.paths)
	}
}

func TestFenceRefusesCommits(t *testing.T) {
	var fenced atomic.Bool
	errStale := errors.New("stale epoch")
	fence := func(p actors.Path) error {
		if fenced.Load() && p.String() == "c/b" {
			return errStale
		}
		return nil
	}
	h := actortest.New(t, actors.Options{Kinds: testKinds(), Fence: fence})
	h.MustRequest("c/b", add{5})
	fenced.Store(true)
	_, err := h.Request("c/b", add{1})
	if !errors.Is(err, actors.ErrFenced) || !errors.Is(err, errStale) {
		t.Fatalf("fenced request: %v", err)
	}
	if v := h.MustRequest("c/c", add{1}); v != 1 {
		t.Fatalf("another part: %v", v)
	}
	fenced.Store(false)
	if v := h.MustRequest("c/b", add{1}); v != 6 {
		t.Fatalf("after the fence lifted, counter %v, want 6 (the fenced write rolled back)", v)
	}
}

// Options.Committed sees every batch that wrote, before its replies leave;
// its error reaches the callers.
func TestCommittedHook(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	var refuse atomic.Bool
	hook := func(c actors.Commit) error {
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %d %v", c.Path, c.Messages, strings.HasSuffix(c.File, actors.PartFileName)))
		mu.Unlock()
		if refuse.Load() {
			return errors.New("no replica took it")
		}
		return nil
	}
	h := actortest.New(t, actors.Options{Kinds: testKinds(), Committed: hook})
	h.MustRequest("c/b", add{1})
	h.MustRequest("c/b", get{}) // writes too: UPDATE ... SET n = n + 0
	mu.Lock()
	n := 0
	for _, s := range seen {
		if s == "c/b 1 true" {
			n++
		}
	}
	mu.Unlock()
	if n != 2 {
		t.Fatalf("hook saw %q, want two batches of c/b", seen)
	}
	refuse.Store(true)
	if _, err := h.Request("c/b", add{1}); err == nil || !strings.Contains(err.Error(), "no replica took it") {
		t.Fatalf("a batch the hook refused answered %v", err)
	}
}
