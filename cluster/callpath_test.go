package cluster

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// relay asks its part to request To with Next (nil: it replies relayed{}
// at once), with the handler's Context.Context, and to reply what To
// replied.
type (
	relay struct {
		To   string
		Next *relay
	}
	relayed struct{ Parts int }
)

func init() {
	actors.MustRegisterMessage[relay]("cluster_test.relay")
	actors.MustRegisterMessage[relayed]("cluster_test.relayed")
}

// wire carries the requests of one node's System to another node as they
// travel between processes: encoded in a request frame by requestFrame,
// served by the other node's serve, whose context starts afresh, and
// decoded by replyValue. Only protoactor-go's transport and the table's
// lookup are left out (two nodes with their transports in one process race
// on gRPC's process-wide logger).
type wire struct{ here, there *Node }

func (w *wire) Local(p actors.Path) bool { return w.here.Local(p) }

func (w *wire) Request(ctx context.Context, p actors.Path, msg any) (any, error) {
	name, data, err := actors.EncodeMessage(msg)
	if err != nil {
		return nil, err
	}
	frame, err := w.here.requestFrame(ctx, ownerEntry{Owner: Owner{Node: w.there.cfg.Name, Epoch: 1}}, p, name, data, time.Minute)
	if err != nil {
		return nil, err
	}
	r, payload := w.there.serve(frame)
	b, err := encodeFrame(opReply, r, payload) // the answer travels as a frame too
	if err != nil {
		return nil, err
	}
	if _, payload, err = decodeFrame(b, &r); err != nil {
		return nil, err
	}
	return replyValue(w.there.cfg.Name, r, payload)
}

// twoNodes returns two nodes, n1 owning bank/here and n2 bank/there, each
// with a System whose requests for the other's parts travel through wire.
func twoNodes(t *testing.T) (n1, n2 *Node) {
	newNode := func(name, unit string) *Node {
		n := &Node{cfg: Config{Name: name, PlacementDepth: 2, RequestTimeout: time.Minute}, ctx: context.Background()}
		owned := map[string]uint64{unit: 1}
		n.owned.Store(&owned)
		n.deadline.Store(math.MaxInt64)
		return n
	}
	n1, n2 = newNode("n1", "bank/here"), newNode("n2", "bank/there")
	for _, w := range []*wire{{n1, n2}, {n2, n1}} {
		sys := new(*actors.System)
		h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
			m, ok := msg.(relay)
			if !ok {
				return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
			}
			if m.Next == nil {
				return relayed{Parts: 1}, nil
			}
			v, err := (*sys).Request(c.Context(), m.To, *m.Next)
			if err != nil {
				return nil, err
			}
			return relayed{Parts: v.(relayed).Parts + 1}, nil
		})
		w.here.sys = actortest.New(t, actors.Options{Remote: w, Kinds: []actors.Kind{
			{Name: "bank", Pattern: "bank", Handler: h},
			{Name: "branch", Pattern: "bank/*", Handler: h},
			{Name: "account", Pattern: "bank/*/*", Handler: h},
		}}).System()
		*sys = w.here.sys
	}
	return n1, n2
}

// A cycle of requests across nodes (bank/here/a on n1 -> bank/there/b on
// n2 -> bank/here/a) fails at once: the call path travels in the request
// frame, and n2 finds bank/here/a on it.
func TestCallCycleAcrossNodes(t *testing.T) {
	n1, _ := twoNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Without a cycle: n1 -> n2 -> n1.
	v, err := n1.sys.Request(ctx, "bank/here/a", relay{To: "bank/there/b", Next: &relay{To: "bank/here/c", Next: &relay{}}})
	if err != nil || v != (relayed{Parts: 3}) {
		t.Fatalf("a -> b -> c: %v, %v", v, err)
	}
	// With one.
	_, err = n1.sys.Request(ctx, "bank/here/a", relay{To: "bank/there/b", Next: &relay{To: "bank/here/a", Next: &relay{}}})
	var re *RemoteError
	if !errors.Is(err, actors.ErrCallCycle) || !errors.As(err, &re) || re.Node != "n2" {
		t.Fatalf("a -> b -> a: %v (%T); want n2's error wrapping actors.ErrCallCycle", err, err)
	}
	if want := "bank/here/a -> bank/there/b -> bank/here/a"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name the cycle %q", err, want)
	}
	if d, _ := ctx.Deadline(); ctx.Err() != nil || time.Until(d) < 30*time.Second {
		t.Fatalf("the cycle was found with %v left of the deadline: it waited", time.Until(d))
	}
}

// The call path a request carries is bounded: its innermost parts, up to
// maxCallBytes of paths.
func TestCallPathBounded(t *testing.T) {
	var path []actors.Path
	for i := range 100 {
		p, err := actors.ParsePath(fmt.Sprintf("bank/b%d/%s", i, strings.Repeat("x", 200)))
		if err != nil {
			t.Fatal(err)
		}
		path = append(path, p)
	}
	calls := callsOf(actors.WithCallPath(context.Background(), path))
	size := 0
	for _, c := range calls {
		size += len(c)
	}
	if size > maxCallBytes || len(calls) == 0 || calls[len(calls)-1] != path[len(path)-1].String() || len(calls) == len(path) {
		t.Fatalf("%d of %d paths travel, %d bytes (max %d), innermost %q", len(calls), len(path), size, maxCallBytes, calls[len(calls)-1])
	}
	got := actors.CallPath(withCalls(context.Background(), append(calls, "not//a path")))
	if len(got) != len(calls) || got[0].String() != calls[0] {
		t.Fatalf("call path received: %v", got)
	}
}
