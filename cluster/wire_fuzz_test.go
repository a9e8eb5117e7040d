package cluster

import (
	"reflect"
	"slices"
	"testing"
)

// A gateway decodes frames from the network: no input may panic it, and
// whatever decodes must decode the same again after encoding.
func FuzzDecodeFrame(f *testing.F) {
	for _, seed := range [][]byte{
		nil, {1}, {1, 0}, {2, 2, '{', '}'},
		mustFrame(f, opRequest, request{Path: "a/b", Name: "x", Epoch: 3}, []byte(`{"A":1}`)),
		mustFrame(f, opRequest, request{Path: "a/b", Name: "x", Calls: []string{"a/c", "a/b/d"}}, nil),
		mustFrame(f, opChunk, chunk{Move: "m", File: "a/_part.db", Offset: 512}, []byte("data")),
		mustFrame(f, opInstall, install{Move: "m", Unit: "a/b", Files: []fileInfo{{Name: "_part.db", Size: 1}}}, nil),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw rawHeader
		op, payload, err := decodeFrame(b, &raw)
		if err != nil {
			return
		}
		var req request
		if raw.into(&req) != nil {
			return
		}
		again, err := encodeFrame(op, req, payload)
		if err != nil {
			t.Fatal(err)
		}
		var back request
		op2, payload2, err := decodeFrame(again, &back)
		same := slices.Equal(back.Calls, req.Calls) // an empty list travels as none
		back.Calls, req.Calls = nil, nil
		if err != nil || op2 != op || string(payload2) != string(payload) || !reflect.DeepEqual(back, req) || !same {
			t.Fatalf("%q: re-encoded as %q: %v", b, again, err)
		}
	})
}

func mustFrame(f *testing.F, op byte, hdr any, payload []byte) []byte {
	b, err := encodeFrame(op, hdr, payload)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
