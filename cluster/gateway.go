package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/fractalrt/fractal/actors"
)

// remoteQueue bounds the messages protoactor-go's remote transport queues
// per peer and in its endpoint manager (its defaults are a million).
const remoteQueue = 10_000

// startRemote starts protoactor-go's remote transport on the configured
// address; the gateway actor is spawned once the System is open.
func (n *Node) startRemote() (err error) {
	host, portStr, _ := net.SplitHostPort(n.cfg.ListenAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("%w: listen port %q", ErrConfig, portStr)
	}
	n.as = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(quiet{n.log.Handler()}).With("component", "protoactor")
	}))
	opts := []remote.ConfigOption{
		remote.WithEndpointWriterQueueSize(remoteQueue),
		remote.WithEndpointManagerQueueSize(remoteQueue),
	}
	if n.cfg.TLS != nil {
		opts = append(opts,
			remote.WithServerOptions(grpc.Creds(credentials.NewTLS(n.cfg.TLS))),
			remote.WithDialOptions(grpc.WithTransportCredentials(credentials.NewTLS(n.cfg.TLS))))
	} else {
		opts = append(opts, remote.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	if n.cfg.AdvertiseAddr != "" {
		opts = append(opts, remote.WithAdvertisedHost(n.cfg.AdvertiseAddr))
	}
	// A request whose connection breaks is failed at once (see links).
	n.as.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*remote.EndpointTerminatedEvent); ok {
			n.links.broke(e.Address)
		}
	})
	rc := remote.Configure(host, port, opts...)
	rc.MaxRetryCount = 1 // a peer that is down is reported by the table, not by retries
	n.rem = remote.NewRemote(n.as, rc)
	defer func() {
		// protoactor-go panics when it cannot listen.
		if v := recover(); v != nil {
			n.rem = nil
			err = fmt.Errorf("cluster: listening on %s: %v", n.cfg.ListenAddr, v)
		}
	}()
	n.rem.Start()
	n.addr = n.as.Address()
	return nil
}

// receive is the gateway actor: it hands each frame to a goroutine of its
// own (at most Config.MaxInflight at once), which answers the sender.
func (n *Node) receive(c actor.Context) {
	bv, ok := c.Message().(*wrapperspb.BytesValue)
	if !ok {
		return // protoactor-go's lifecycle messages
	}
	sender := c.Sender()
	if sender == nil {
		return
	}
	select {
	case n.sem <- struct{}{}:
	default:
		err := fmt.Errorf("%w: node %s serves %d requests already", actors.ErrBackpressure, n.cfg.Name, n.cfg.MaxInflight)
		n.answer(sender, reply{Err: err.Error(), Code: codeOf(err)}, nil)
		return
	}
	go func() {
		defer func() { <-n.sem }()
		r, payload := n.serve(bv.Value)
		n.answer(sender, r, payload)
	}()
}

func (n *Node) answer(to *actor.PID, r reply, payload []byte) {
	b, err := encodeFrame(opReply, r, payload)
	if err != nil {
		return
	}
	n.as.Root.Send(to, &wrapperspb.BytesValue{Value: b})
}

// serve handles one frame from another node.
func (n *Node) serve(frame []byte) (reply, []byte) {
	var raw rawHeader
	op, payload, err := decodeFrame(frame, &raw)
	if err != nil {
		return replyOf(nil, err)
	}
	switch op {
	case opRequest:
		var req request
		if err := raw.into(&req); err != nil {
			return replyOf(nil, err)
		}
		return replyOf(n.serveRequest(req, payload))
	case opChunk:
		var ch chunk
		if err := raw.into(&ch); err != nil {
			return replyOf(nil, err)
		}
		return replyOf(nil, n.receiveChunk(ch, payload))
	case opInstall, opAbort:
		var in install
		if err := raw.into(&in); err != nil {
			return replyOf(nil, err)
		}
		if op == opAbort {
			return replyOf(nil, n.abortInstall(in))
		}
		return replyOf(nil, n.install(in))
	}
	return replyOf(nil, fmt.Errorf("cluster: unknown operation %d", op))
}

// serveRequest serves a request for a part of a subtree this node owns:
// it waits while the subtree is being moved away, refuses with
// ErrUnavailable while the node's lease has expired, and with ErrNotOwner
// when the subtree is not (or no longer) this node's, so that a sender
// whose view was stale asks the right node instead of this one forwarding
// again.
func (n *Node) serveRequest(req request, data []byte) (any, error) {
	p, err := actors.ParsePath(req.Path)
	if err != nil {
		return nil, err
	}
	wait := time.Duration(req.Deadline) * time.Millisecond
	if wait <= 0 || wait > n.cfg.RequestTimeout {
		wait = n.cfg.RequestTimeout
	}
	ctx, cancel := context.WithTimeout(n.ctx, wait)
	defer cancel()
	unit := unitOf(p, n.cfg.PlacementDepth).String()
	if ch := n.movingCh(unit); ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s on node %s", ErrMoving, unit, n.cfg.Name)
		}
	}
	epoch, owned := (*n.owned.Load())[unit]
	if owned && epoch >= req.Epoch && time.Now().UnixNano() >= n.deadline.Load() {
		// Still the owner, but unable to write until its lease is renewed
		// (etcd unreachable): unavailable, as for a request made here.
		// ErrNotOwner would have the sender ask again and again, to the
		// end of its attempts, and then report a misleading error.
		return nil, fmt.Errorf("%w: %s on node %s: %v", ErrUnavailable, unit, n.cfg.Name, ErrLeaseExpired)
	}
	if !owned || epoch < req.Epoch || !n.Local(p) {
		return nil, fmt.Errorf("%w: %s is not on node %s", ErrNotOwner, unit, n.cfg.Name)
	}
	msg, err := actors.DecodeMessage(req.Name, data)
	if err != nil {
		return nil, err
	}
	return n.sys.Request(withCalls(ctx, req.Calls), req.Path, msg)
}

// forward sends a request to the node at addr, owner of p's subtree.
func (n *Node) forward(ctx context.Context, o ownerEntry, addr string, p actors.Path, name string, data []byte) (any, error) {
	timeout := n.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	select {
	case n.outSem <- struct{}{}:
		defer func() { <-n.outSem }()
	default:
		return nil, fmt.Errorf("%w: node %s waits for %d answers from other nodes already", actors.ErrBackpressure, n.cfg.Name, n.cfg.MaxInflight)
	}
	frame, err := n.requestFrame(ctx, o, p, name, data, timeout)
	if err != nil {
		return nil, err
	}
	r, payload, err := n.call(ctx, o.Node, addr, frame, timeout)
	if err != nil {
		return nil, err
	}
	return replyValue(o.Node, r, payload)
}

// requestFrame encodes a request for p, of the message name and data,
// to o's node, with the call path of ctx.
func (n *Node) requestFrame(ctx context.Context, o ownerEntry, p actors.Path, name string, data []byte, timeout time.Duration) ([]byte, error) {
	return encodeFrame(opRequest, request{
		Path: p.String(), Name: name, Epoch: o.Epoch, Deadline: timeout.Milliseconds(), From: n.cfg.Name,
		Calls: callsOf(ctx),
	}, data)
}

// replyValue returns the reply node sent, or its error.
func replyValue(node string, r reply, payload []byte) (any, error) {
	if err := errorFromWire(node, r); err != nil {
		return nil, err
	}
	if r.Name == "" {
		return nil, nil
	}
	return actors.DecodeMessage(r.Name, payload)
}

// call sends one frame to the gateway at addr and waits for its answer.
// Only this goroutine waits on the future.
func (n *Node) call(ctx context.Context, node, addr string, frame []byte, timeout time.Duration) (reply, []byte, error) {
	if info, live := n.tab.node(node); !live || info.Addr != addr {
		return reply{}, nil, fmt.Errorf("%w: node %s is down", ErrUnavailable, node)
	}
	lost := n.links.watch(addr)
	pid := actor.NewPID(addr, gatewayName)
	f := n.as.Root.RequestFuture(pid, &wrapperspb.BytesValue{Value: frame}, timeout)
	type res struct {
		v   any
		err error
	}
	done := make(chan res, 1)
	go func() {
		v, err := f.Result()
		done <- res{v, err}
	}()
	var out res
	for waiting := true; waiting; {
		_, _, _, _, changed := n.tab.owner("")
		select {
		case out = <-done:
			waiting = false
		case <-ctx.Done():
			return reply{}, nil, ctx.Err()
		case <-n.ctx.Done():
			return reply{}, nil, ErrClosed
		case <-lost:
			// The connection to the node broke (a network partition, a
			// node that went away): the frame or its answer is lost, and
			// protoactor-go would leave the future to its timeout, the
			// caller's whole deadline. The request may have been served.
			select {
			case out = <-done:
				waiting = false
				continue
			default:
			}
			return reply{}, nil, fmt.Errorf("%w: node %s: the connection to it broke; the request may have been served", ErrUnavailable, node)
		case <-changed:
			// A node whose lease expired will not acknowledge anything
			// (its fence refuses), so its callers need not wait for it.
			if info, live := n.tab.node(node); !live || info.Addr != addr {
				return reply{}, nil, fmt.Errorf("%w: node %s went down", ErrUnavailable, node)
			}
		}
	}
	if out.err != nil {
		if errors.Is(out.err, actor.ErrTimeout) {
			if ctx.Err() != nil {
				return reply{}, nil, ctx.Err()
			}
			return reply{}, nil, fmt.Errorf("%w: node %s did not answer within %v", ErrUnavailable, node, timeout)
		}
		return reply{}, nil, fmt.Errorf("%w: node %s: %w", ErrUnavailable, node, out.err)
	}
	bv, ok := out.v.(*wrapperspb.BytesValue)
	if !ok {
		return reply{}, nil, fmt.Errorf("%w: node %s answered %T", ErrUnavailable, node, out.v)
	}
	var r reply
	op, payload, err := decodeFrame(bv.Value, &r)
	if err != nil || op != opReply {
		return reply{}, nil, fmt.Errorf("%w: node %s: bad answer: %v", ErrUnavailable, node, err)
	}
	return r, payload, nil
}

// links tells the requests waiting for an answer from another node that
// their connection broke: protoactor-go's remote transport drops the
// frames on a connection that breaks (and those queued for it), without
// failing their futures, and publishes an EndpointTerminatedEvent.
type links struct {
	mu   sync.Mutex
	lost map[string]chan struct{} // address -> closed when its connection breaks
}

// watch returns a channel closed when the connection to addr breaks, the
// one a frame sent from now on travels on or a later one.
func (l *links) watch(addr string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost == nil {
		l.lost = make(map[string]chan struct{})
	}
	ch, ok := l.lost[addr]
	if !ok {
		ch = make(chan struct{})
		l.lost[addr] = ch
	}
	return ch
}

func (l *links) broke(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ch, ok := l.lost[addr]; ok {
		close(ch)
		delete(l.lost, addr)
	}
}
