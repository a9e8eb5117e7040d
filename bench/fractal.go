package main

import (
	"context"
	"fmt"

	"github.com/fractalrt/fractal/actors"
)

// fractalMode is one configuration of fractal under test.
type fractalMode int

const (
	fractalDurable        fractalMode = iota // PowerLoss: the shared barrier (the default)
	fractalDurablePerPart                    // PowerLossPerCommit: synchronous=FULL, a sync per part commit
	fractalNormal                            // ProcessCrash: synchronous=NORMAL
	fractalNoBatch                           // PowerLoss, MaxBatch 1: one commit per message
)

func (m fractalMode) options() actors.Options {
	switch m {
	case fractalDurablePerPart:
		return actors.Options{Durability: actors.PowerLossPerCommit}
	case fractalNormal:
		return actors.Options{Durability: actors.ProcessCrash}
	case fractalNoBatch:
		return actors.Options{Durability: actors.PowerLoss, MaxBatch: 1}
	default:
		return actors.Options{Durability: actors.PowerLoss}
	}
}

// fractalTarget is a fractal System with two kinds: "bench", the whole,
// never messaged, and "part", one per counter, at bench/p0000, bench/p0001...
type fractalTarget struct {
	mode  fractalMode
	dir   string
	sys   *actors.System
	paths []string
}

func newFractal(m fractalMode) *fractalTarget { return &fractalTarget{mode: m} }

// incr is the one message a part handles.
type incr struct{}

func benchKinds() []actors.Kind {
	return []actors.Kind{
		{Name: "bench", Pattern: "bench", Handler: actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
			return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
		})},
		{Name: "part", Pattern: "bench/*", Migrations: counterMigrations,
			Handler: actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
				if _, ok := msg.(incr); !ok {
					return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
				}
				var n int64
				if err := c.QueryRow(`SELECT n FROM counter`).Scan(&n); err != nil {
					return nil, err
				}
				n++
				if _, err := c.Exec(`UPDATE counter SET n = ?`, n); err != nil {
					return nil, err
				}
				return n, nil
			})},
	}
}

func (f *fractalTarget) open(ctx context.Context, dir string, parts int) error {
	opts := f.mode.options()
	opts.Kinds = benchKinds()
	sys, err := actors.Open(ctx, dir, opts)
	if err != nil {
		return err
	}
	f.dir, f.sys = dir, sys
	f.paths = make([]string, parts)
	for i := range f.paths {
		f.paths[i] = "bench/" + partName(i)
	}
	return nil
}

func (f *fractalTarget) call(ctx context.Context, _ *caller, part int) (int64, error) {
	v, err := f.sys.Request(ctx, f.paths[part], incr{})
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("reply is %T, want int64", v)
	}
	return n, nil
}

func (f *fractalTarget) stats() (counters, bool) {
	s := f.sys.Stats()
	return counters{messages: s.Messages, commits: s.Commits, syncs: s.Syncs, hasSyncs: f.mode == fractalDurable || f.mode == fractalNoBatch}, true
}

// finish closes the system, then reads every part's file back.
func (f *fractalTarget) finish(ctx context.Context) (int64, error) {
	if err := f.sys.Close(ctx); err != nil {
		return 0, err
	}
	files := make([]string, len(f.paths))
	for i, p := range f.paths {
		files[i] = actors.MustParsePath(p).File(f.dir)
	}
	return sumFiles(ctx, files)
}
