package cluster

import (
	"context"
	"log/slog"
)

// quiet passes protoactor-go's records on at debug level: it reports a
// peer going away (a node stopping, a connection being reset) as an error,
// which in a cluster is an ordinary event that the node reports itself
// (ErrUnavailable) where it matters.
type quiet struct{ h slog.Handler }

// Enabled implements slog.Handler.
func (q quiet) Enabled(ctx context.Context, _ slog.Level) bool {
	return q.h.Enabled(ctx, slog.LevelDebug)
}

// Handle implements slog.Handler.
func (q quiet) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return q.h.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (q quiet) WithAttrs(as []slog.Attr) slog.Handler { return quiet{q.h.WithAttrs(as)} }

// WithGroup implements slog.Handler.
func (q quiet) WithGroup(name string) slog.Handler { return quiet{q.h.WithGroup(name)} }
