package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/fractalrt/fractal/actors"
)

func TestUnitOf(t *testing.T) {
	for _, c := range []struct {
		path  string
		depth int
		want  string
	}{
		{"mail", 2, "mail"},
		{"mail/example.org", 2, "mail/example.org"},
		{"mail/example.org/alice", 2, "mail/example.org"},
		{"mail/example.org/alice/inbox", 1, "mail"},
	} {
		if got := unitOf(actors.MustParsePath(c.path), c.depth).String(); got != c.want {
			t.Errorf("unitOf(%s, %d) = %s, want %s", c.path, c.depth, got, c.want)
		}
	}
}

// The controller's choice: the live node with the fewest subtrees, ties by
// name; subtrees of nodes that are down do not count.
func TestLeastLoaded(t *testing.T) {
	owners := map[string]Owner{
		"a/1": {Node: "n1"}, "a/2": {Node: "n1"}, "a/3": {Node: "n2"}, "a/4": {Node: "gone"}, "a/5": {Node: "gone"},
	}
	for _, c := range []struct {
		live []string
		want string
	}{
		{nil, ""},
		{[]string{"n1"}, "n1"},
		{[]string{"n1", "n2"}, "n2"},
		{[]string{"n2", "n1", "n3"}, "n3"},
		{[]string{"n4", "n3"}, "n3"},
	} {
		if got := leastLoaded(c.live, owners); got != c.want {
			t.Errorf("leastLoaded(%v) = %q, want %q", c.live, got, c.want)
		}
	}
	// Placing one after another spreads evenly.
	table := map[string]Owner{}
	for i := range 9 {
		n := leastLoaded([]string{"n1", "n2", "n3"}, table)
		table[fmt.Sprint(i)] = Owner{Node: n}
	}
	count := map[string]int{}
	for _, o := range table {
		count[o.Node]++
	}
	if count["n1"] != 3 || count["n2"] != 3 || count["n3"] != 3 {
		t.Fatalf("nine placements: %v", count)
	}
}

// Errors cross the wire as text with their sentinel: errors.Is holds on
// the caller's side.
func TestErrorsKeepTheirSentinel(t *testing.T) {
	for _, sentinel := range []error{
		ErrNotOwner, ErrUnavailable, ErrMoving, actors.ErrBackpressure, actors.ErrFenced, actors.ErrNoKind,
		actors.ErrUnknownMessage, actors.ErrPanic, actors.ErrCallCycle, context.DeadlineExceeded,
	} {
		err := fmt.Errorf("somewhere: %w", sentinel)
		r, _ := replyOf(nil, err)
		b, err2 := encodeFrame(opReply, r, nil)
		if err2 != nil {
			t.Fatal(err2)
		}
		var back reply
		if _, _, err := decodeFrame(b, &back); err != nil {
			t.Fatal(err)
		}
		got := errorFromWire("n2", back)
		var re *RemoteError
		if !errors.Is(got, sentinel) || !errors.As(got, &re) || re.Node != "n2" || got.Error() != err.Error() {
			t.Errorf("%v came back as %v (%T)", err, got, got)
		}
	}
	// A fenced commit wraps the fence's reason too: fenced wins.
	err := fmt.Errorf("%w: %w", actors.ErrFenced, ErrLeaseExpired)
	r, _ := replyOf(nil, err)
	if got := errorFromWire("n1", r); !errors.Is(got, actors.ErrFenced) {
		t.Fatalf("fenced came back as %v", got)
	}
	// An error no sentinel describes keeps its text.
	r, _ = replyOf(nil, errors.New("insufficient funds"))
	if got := errorFromWire("n1", r); got.Error() != "insufficient funds" || errors.Unwrap(got) != nil {
		t.Fatalf("plain error came back as %v", got)
	}
}

func TestFrames(t *testing.T) {
	b, err := encodeFrame(opRequest, request{Path: "a/b", Name: "x", Epoch: 7}, []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	var raw rawHeader
	op, payload, err := decodeFrame(b, &raw)
	if err != nil || op != opRequest || string(payload) != "payload" {
		t.Fatalf("op %d payload %q err %v", op, payload, err)
	}
	var req request
	if err := raw.into(&req); err != nil || req.Path != "a/b" || req.Epoch != 7 {
		t.Fatalf("header %+v, %v", req, err)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 200}, append([]byte{1, 5}, "{}"...)} {
		if _, _, err := decodeFrame(bad, &raw); err == nil {
			t.Errorf("frame %v decoded", bad)
		}
	}
	if _, _, err := decodeFrame(make([]byte, maxFrame+1), &raw); !errors.Is(err, actors.ErrMessageTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Name: "n1", DataDir: "d", Etcd: []string{"127.0.0.1:2379"}}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	if ok.ListenAddr != DefaultListenAddr || ok.PlacementDepth != DefaultPlacementDepth || ok.Prefix != DefaultPrefix {
		t.Fatalf("defaults not applied: %+v", ok)
	}
	for _, bad := range []Config{
		{DataDir: "d", Etcd: []string{"e"}},
		{Name: "a/b", DataDir: "d", Etcd: []string{"e"}},
		{Name: "n", Etcd: []string{"e"}},
		{Name: "n", DataDir: "d"},
		{Name: "n", DataDir: "d", Etcd: []string{"e"}, Prefix: "x"},
		{Name: "n", DataDir: "d", Etcd: []string{"e"}, LeaseTTL: 10},
		{Name: "n", DataDir: "d", Etcd: []string{"e"}, ListenAddr: "nope"},
		{Name: "n", DataDir: "d", Etcd: []string{"e"}, Options: actors.Options{Fence: func(actors.Path) error { return nil }}},
	} {
		if err := bad.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", bad, err)
		}
	}
}
