package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

type treeEntry struct {
	Path     string    `json:"path"`
	Bytes    int64     `json:"bytes"`
	Version  int       `json:"schema_version"`
	Modified time.Time `json:"modified"`
	Error    string    `json:"error,omitempty"`
	// Deleted: the part, or an ancestor, was deleted, and its files wait
	// for its parent's next activation to be removed (a crash cut the
	// deletion short).
	Deleted bool `json:"deleted,omitempty"`
}

func cmdTree(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("tree", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print JSON")
	if err := fl.Parse(args); err != nil {
		return usageError("tree: %v", err)
	}
	if fl.NArg() < 1 || fl.NArg() > 2 {
		return usageError("tree: want DIR [PATH]")
	}
	dir, err := dataDir(fl.Arg(0))
	if err != nil {
		return err
	}
	var sub actors.Path
	if fl.NArg() == 2 {
		if sub, err = actors.ParsePath(fl.Arg(1)); err != nil {
			return err
		}
	}
	parts, err := walkParts(dir, sub)
	if err != nil {
		return err
	}
	entries := make([]treeEntry, len(parts))
	deleted := deletedParts{dir: dir}
	for i, p := range parts {
		e := treeEntry{Path: p.path.String(), Deleted: deleted.has(ctx, p.path)}
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(p.file + suffix); err == nil {
				e.Bytes += fi.Size()
				if suffix == "" {
					e.Modified = fi.ModTime().UTC()
				}
			}
		}
		db, err := persistence.Open(ctx, p.file, &persistence.Options{ReadOnly: true})
		if err != nil {
			e.Error = err.Error()
		} else {
			e.Version = db.Version()
			db.Close()
		}
		entries[i] = e
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries) // made with make: [] when there is no part
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tBYTES\tVERSION\tMODIFIED")
	for _, e := range entries {
		depth := strings.Count(e.Path, "/")
		name := actors.MustParsePath(e.Path).Name()
		version := fmt.Sprint(e.Version)
		if e.Error != "" {
			version = "error: " + e.Error
		}
		if e.Deleted {
			version += " (deleted)"
		}
		fmt.Fprintf(tw, "%s%s\t%d\t%s\t%s\n", strings.Repeat("  ", depth), name, e.Bytes, version, e.Modified.Format(time.RFC3339))
	}
	return tw.Flush()
}

// deletedParts tells which parts are deleted: those their parents list in
// the runtime's table of deleted children, and everything below them.
// Each parent's file is read once.
type deletedParts struct {
	dir     string
	parents map[actors.Path]map[string]bool
}

func (d *deletedParts) has(ctx context.Context, p actors.Path) bool {
	for q := p; !q.IsRoot(); q = q.Parent() {
		if d.of(ctx, q.Parent())[q.Name()] {
			return true
		}
	}
	return false
}

// of returns the deleted children of the part at parent (the root file's
// for the root); none when its file cannot be read.
func (d *deletedParts) of(ctx context.Context, parent actors.Path) map[string]bool {
	if names, ok := d.parents[parent]; ok {
		return names
	}
	if d.parents == nil {
		d.parents = map[actors.Path]map[string]bool{}
	}
	names := map[string]bool{}
	d.parents[parent] = names
	file := filepath.Join(d.dir, rootFile)
	if !parent.IsRoot() {
		file = parent.File(d.dir)
	}
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		return names
	}
	defer db.Close()
	_ = db.View(ctx, func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT name FROM ` + deletedTable)
		if err != nil {
			return err // no such table: nothing deleted
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if rows.Scan(&name) == nil {
				names[name] = true
			}
		}
		return rows.Err()
	})
	return names
}
