package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fractalrt/fractal/actors"
)

// A found part: its path and its file.
type found struct {
	path actors.Path
	file string
}

// dataDir checks that dir is a data directory and returns it absolute.
func dataDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return abs, nil
}

// walkParts returns every part at or under sub (root when zero), sorted by
// path, by walking the directories. Directories whose names are not
// encoded segments (the runtime's own start with '_') are skipped.
func walkParts(dir string, sub actors.Path) ([]found, error) {
	start := dir
	if !sub.IsRoot() {
		start = sub.Dir(dir)
	}
	var out []found
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fmt.Errorf("no part at %s", sub)
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if p != dir {
			if _, err := actors.DecodeSegment(d.Name()); err != nil {
				return fs.SkipDir // not a part's directory
			}
		}
		file := filepath.Join(p, actors.PartFileName)
		if _, err := os.Stat(file); err != nil {
			return nil
		}
		path, err := actors.PathFromDir(dir, p)
		if err != nil {
			return nil
		}
		out = append(out, found{path, file})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].path.String() < out[j].path.String() })
	return out, err
}

// matchParts returns the parts whose paths match pattern (segments are
// literals or "*"), listing only the directories the pattern reaches.
func matchParts(dir, pattern string) ([]found, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty pattern", actors.ErrInvalidPath)
	}
	segs := strings.Split(pattern, "/")
	level := []string{dir}
	for i, seg := range segs {
		var next []string
		for _, d := range level {
			if seg != "*" {
				if _, err := actors.ParsePath(seg); err != nil {
					return nil, fmt.Errorf("pattern %q, segment %d: %w", pattern, i+1, err)
				}
				c := filepath.Join(d, actors.EncodeSegment(seg))
				if fi, err := os.Stat(c); err == nil && fi.IsDir() {
					next = append(next, c)
				}
				continue
			}
			entries, err := os.ReadDir(d)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if _, err := actors.DecodeSegment(e.Name()); e.IsDir() && err == nil {
					next = append(next, filepath.Join(d, e.Name()))
				}
			}
		}
		level = next
	}
	var out []found
	for _, d := range level {
		file := filepath.Join(d, actors.PartFileName)
		if _, err := os.Stat(file); err != nil {
			continue
		}
		p, err := actors.PathFromDir(dir, d)
		if err != nil {
			continue
		}
		out = append(out, found{p, file})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path.String() < out[j].path.String() })
	return out, nil
}

// forEach runs fn on every part, at most parallel at a time, reporting
// progress on stderr once a second for long runs. It returns the errors by
// index (nil where fn succeeded).
func forEach(ctx context.Context, parts []found, parallel int, stderr io.Writer, verb string, fn func(ctx context.Context, i int, p found) error) []error {
	if parallel <= 0 {
		parallel = 4 * runtime.GOMAXPROCS(0)
	}
	errs := make([]error, len(parts))
	var done atomic.Int64
	stop := make(chan struct{})
	var progress sync.WaitGroup
	if len(parts) > 100 {
		progress.Add(1)
		go func() {
			defer progress.Done()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					fmt.Fprintf(stderr, "%s %d/%d parts\n", verb, done.Load(), len(parts))
				}
			}
		}()
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, p := range parts {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done(); done.Add(1) }()
			errs[i] = fn(ctx, i, p)
		}()
	}
	wg.Wait()
	close(stop)
	progress.Wait()
	return errs
}
