package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// The runtime's own files in a data directory: the top-level parts, and the
// index of durable alarms. A subtree's backup leaves both out: restored
// parts register their alarms again when they are next activated.
const (
	rootFile   = "_fractal.db"
	alarmsFile = "_fractal_alarms.db"

	// deletedTable lists, in a parent's file, its deleted children (see
	// actors.System.Delete).
	deletedTable = "_fractal_deleted"
)

// copyParts copies each part's file (and, when whole is set, the root
// file) from src to the same place under dest with SQLite's backup API:
// each copy is a consistent snapshot of its part, taken while the system
// may be running. Existing files in dest are never overwritten.
func copyParts(ctx context.Context, src, dest string, parts []found, whole bool, parallel int, stdout, stderr io.Writer, verb string) error {
	files := parts
	if whole {
		for _, name := range []string{rootFile, alarmsFile} {
			if _, err := os.Stat(filepath.Join(src, name)); err == nil {
				files = append(files, found{file: filepath.Join(src, name)})
			}
		}
	}
	errs := forEach(ctx, files, parallel, stderr, verb, func(ctx context.Context, _ int, p found) error {
		rel, err := filepath.Rel(src, p.file)
		if err != nil {
			return err
		}
		target := filepath.Join(dest, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		db, err := persistence.Open(ctx, p.file, &persistence.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.Backup(ctx, target)
	})
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "fractal: %s: %v\n", files[i].file, err)
		}
	}
	fmt.Fprintf(stdout, "%d files %s, %d failed\n", len(files)-failed, verb, failed)
	if failed > 0 {
		return fmt.Errorf("%s: %d of %d files failed", verb, failed, len(files))
	}
	return nil
}

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("backup", flag.ContinueOnError)
	fl.SetOutput(stderr)
	parallel := fl.Int("parallel", 0, "parts copied at once (0: 4 per CPU)")
	if err := fl.Parse(args); err != nil {
		return usageError("backup: %v", err)
	}
	if fl.NArg() < 2 || fl.NArg() > 3 {
		return usageError("backup: want DIR DEST [PATH]")
	}
	dir, err := dataDir(fl.Arg(0))
	if err != nil {
		return err
	}
	dest, err := filepath.Abs(fl.Arg(1))
	if err != nil {
		return err
	}
	if entries, err := os.ReadDir(dest); err == nil && len(entries) > 0 {
		return fmt.Errorf("backup: %s is not empty", dest)
	}
	var sub actors.Path
	if fl.NArg() == 3 {
		if sub, err = actors.ParsePath(fl.Arg(2)); err != nil {
			return err
		}
	}
	parts, err := walkParts(dir, sub)
	if err != nil {
		return err
	}
	return copyParts(ctx, dir, dest, parts, sub.IsRoot(), *parallel, stdout, stderr, "backed up")
}

func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("restore", flag.ContinueOnError)
	fl.SetOutput(stderr)
	parallel := fl.Int("parallel", 0, "parts copied at once (0: 4 per CPU)")
	if err := fl.Parse(args); err != nil {
		return usageError("restore: %v", err)
	}
	if fl.NArg() != 2 {
		return usageError("restore: want BACKUP DIR")
	}
	src, err := dataDir(fl.Arg(0))
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(fl.Arg(1))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := lockData(dir)
	if err != nil {
		return err
	}
	defer unlock()
	parts, err := walkParts(src, actors.Path{})
	if err != nil {
		return err
	}
	return copyParts(ctx, src, dir, parts, true, *parallel, stdout, stderr, "restored")
}
