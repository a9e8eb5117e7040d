package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fractalrt/fractal/actors"
)

// The wire protocol between nodes. Every message is one
// google.protobuf.BytesValue (a protobuf type protoactor-go's remote
// transport already knows) holding a frame:
//
//	op (1 byte) | uvarint length of the header | header (JSON) | payload
//
// A sender asks with RequestFuture and the gateway answers every frame with
// an opReply frame.
const (
	opRequest byte = 1 // header: request; payload: the message's encoding
	opReply   byte = 2 // header: reply; payload: the reply's encoding
	opChunk   byte = 3 // header: chunk; payload: bytes of a file being moved
	opInstall byte = 4 // header: install: verify the files received, put them in place
	opAbort   byte = 5 // header: install: throw the files received away
)

// maxFrame bounds a frame a gateway accepts: a message of
// actors.MaxMessageSize and its header, or a chunk of a moved file.
const maxFrame = actors.MaxMessageSize + 64<<10

// chunkSize is the size of the pieces a moved file travels in.
const chunkSize = 512 << 10

type request struct {
	Path     string   `json:"path"`
	Name     string   `json:"name"`            // registered message name
	Epoch    uint64   `json:"epoch"`           // the epoch the sender believes the owner has
	Deadline int64    `json:"deadline_ms"`     // time the sender waits, in milliseconds
	From     string   `json:"from,omitempty"`  // sending node, for logs
	Calls    []string `json:"calls,omitempty"` // the caller's actors.CallPath, outermost first (see callsOf)
}

// maxCallBytes bounds the call path a request carries: its innermost
// parts, up to this many bytes of paths, well within the header's share of
// maxFrame. A cycle through a part left out waits for its deadline, as
// before the call path travelled.
const maxCallBytes = 8 << 10

// callsOf returns the call path of a request made with ctx, as it travels
// (see maxCallBytes).
func callsOf(ctx context.Context) []string {
	path := actors.CallPath(ctx)
	size, first := 0, len(path)
	for first > 0 && size+len(path[first-1].String()) <= maxCallBytes {
		first--
		size += len(path[first].String())
	}
	if first == len(path) {
		return nil
	}
	out := make([]string, 0, len(path)-first)
	for _, p := range path[first:] {
		out = append(out, p.String())
	}
	return out
}

// withCalls returns ctx carrying the call path a request brought; paths
// that do not parse are left out.
func withCalls(ctx context.Context, calls []string) context.Context {
	if len(calls) == 0 {
		return ctx
	}
	path := make([]actors.Path, 0, len(calls))
	for _, s := range calls {
		if p, err := actors.ParsePath(s); err == nil {
			path = append(path, p)
		}
	}
	return actors.WithCallPath(ctx, path)
}

type reply struct {
	Name string `json:"name,omitempty"` // registered name of the reply; "" for nil
	Err  string `json:"err,omitempty"`
	Code string `json:"code,omitempty"` // the sentinel Err wraps, if recognised
}

type chunk struct {
	Move   string `json:"move"`
	File   string `json:"file"` // slash-separated, relative to the subtree's directory
	Offset int64  `json:"offset"`
}

type install struct {
	Move  string     `json:"move"`
	Unit  string     `json:"unit"`
	Files []fileInfo `json:"files"`
}

type fileInfo struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

func encodeFrame(op byte, hdr any, payload []byte) ([]byte, error) {
	h, err := json.Marshal(hdr)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(h)+len(payload))
	b = append(b, op)
	b = binary.AppendUvarint(b, uint64(len(h)))
	b = append(b, h...)
	return append(b, payload...), nil
}

func decodeFrame(b []byte, hdr any) (op byte, payload []byte, err error) {
	if len(b) > maxFrame {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes", actors.ErrMessageTooLarge, len(b))
	}
	if len(b) < 2 {
		return 0, nil, errors.New("cluster: short frame")
	}
	op = b[0]
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return 0, nil, errors.New("cluster: bad frame header")
	}
	h := b[1+k : 1+k+int(n)]
	if err := json.Unmarshal(h, hdr); err != nil {
		return 0, nil, fmt.Errorf("cluster: bad frame header: %w", err)
	}
	return op, b[1+k+int(n):], nil
}

// sentinels are the errors whose identity survives the wire: a remote error
// wrapping one of them is returned as an error wrapping the same value on
// the caller's side.
var sentinels = map[string]error{
	"not_owner":      ErrNotOwner,
	"unavailable":    ErrUnavailable,
	"moving":         ErrMoving,
	"lease_expired":  ErrLeaseExpired,
	"backpressure":   actors.ErrBackpressure,
	"fenced":         actors.ErrFenced,
	"no_kind":        actors.ErrNoKind,
	"invalid_path":   actors.ErrInvalidPath,
	"unknown_msg":    actors.ErrUnknownMessage,
	"unregistered":   actors.ErrUnregisteredMessage,
	"too_large":      actors.ErrMessageTooLarge,
	"panic":          actors.ErrPanic,
	"activation":     actors.ErrActivation,
	"closed":         actors.ErrClosed,
	"undeliverable":  actors.ErrUndeliverable,
	"no_part":        actors.ErrNoPart,
	"call_cycle":     actors.ErrCallCycle,
	"deadline":       context.DeadlineExceeded,
	"canceled":       context.Canceled,
	"node_closed":    ErrClosed,
	"too_many_trees": ErrTooManySubtrees,
}

// codeOf returns the code of the first sentinel err wraps, in a fixed
// order of precedence (fenced before not_owner: a fenced commit wraps both).
func codeOf(err error) string {
	for _, code := range []string{"fenced", "lease_expired", "not_owner", "moving", "unavailable", "backpressure",
		"no_kind", "invalid_path", "unknown_msg", "unregistered", "too_large", "panic", "activation",
		"closed", "undeliverable", "no_part", "call_cycle", "deadline", "canceled", "node_closed", "too_many_trees"} {
		if errors.Is(err, sentinels[code]) {
			return code
		}
	}
	return ""
}

// RemoteError is an error returned by the handler (or the runtime) on the
// node that served a request. Its text is the remote error's text; it
// unwraps to the sentinel the remote error wrapped, when that was one the
// wire protocol knows (ErrNotOwner, actors.ErrBackpressure,
// actors.ErrFenced, actors.ErrNoKind, ...), so errors.Is works across
// nodes.
type RemoteError struct {
	Node     string // the node that returned it
	Msg      string // the remote error's text
	sentinel error
}

// Error returns the remote error's text.
func (e *RemoteError) Error() string { return e.Msg }

// Unwrap returns the sentinel the remote error wrapped, or nil.
func (e *RemoteError) Unwrap() error { return e.sentinel }

func errorFromWire(node string, r reply) error {
	if r.Err == "" {
		return nil
	}
	return &RemoteError{Node: node, Msg: r.Err, sentinel: sentinels[r.Code]}
}

func replyOf(val any, err error) (reply, []byte) {
	if err != nil {
		return reply{Err: err.Error(), Code: codeOf(err)}, nil
	}
	if val == nil {
		return reply{}, nil
	}
	name, data, err := actors.EncodeMessage(val)
	if err != nil {
		err = fmt.Errorf("cluster: the reply cannot travel: %w", err)
		return reply{Err: err.Error(), Code: codeOf(err)}, nil
	}
	return reply{Name: name}, data
}

// rawHeader holds a frame's header until its operation says what it is.
type rawHeader []byte

// UnmarshalJSON implements json.Unmarshaler.
func (r *rawHeader) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

func (r rawHeader) into(v any) error {
	if err := json.Unmarshal(r, v); err != nil {
		return fmt.Errorf("cluster: bad frame header: %w", err)
	}
	return nil
}
