package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("check", flag.ContinueOnError)
	fl.SetOutput(stderr)
	parallel := fl.Int("parallel", 0, "parts checked at once (0: 4 per CPU)")
	if err := fl.Parse(args); err != nil {
		return usageError("check: %v", err)
	}
	if fl.NArg() != 1 {
		return usageError("check: want DIR")
	}
	dir, err := dataDir(fl.Arg(0))
	if err != nil {
		return err
	}
	parts, err := walkParts(dir, actors.Path{})
	if err != nil {
		return err
	}
	errs := forEach(ctx, parts, *parallel, stderr, "checked", func(ctx context.Context, _ int, p found) error {
		return persistence.CheckFile(ctx, p.file)
	})
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			fmt.Fprintf(stdout, "FAIL %s: %v\n", parts[i].path, err)
		}
	}
	fmt.Fprintf(stdout, "%d parts checked, %d ok, %d failed\n", len(parts), len(parts)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("check: %d of %d parts failed", failed, len(parts))
	}
	return nil
}
