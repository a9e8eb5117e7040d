package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// errWriteRefused is reported when a query tried to write: parts are opened
// read-only and SQLite refuses.
var errWriteRefused = errors.New("writes are refused: fractal opens parts read-only")

type result struct {
	cols []string
	rows [][]any
}

func cmdSQL(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("sql", flag.ContinueOnError)
	fl.SetOutput(stderr)
	format := fl.String("format", "table", "output format: table, csv or json")
	parallel := fl.Int("parallel", 0, "parts queried at once (0: 4 per CPU)")
	if err := fl.Parse(args); err != nil {
		return usageError("sql: %v", err)
	}
	if fl.NArg() != 3 {
		return usageError("sql: want DIR PATH|PATTERN QUERY")
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return usageError("sql: unknown format %q", *format)
	}
	dir, err := dataDir(fl.Arg(0))
	if err != nil {
		return err
	}
	target, query := fl.Arg(1), fl.Arg(2)
	pattern := strings.Contains("/"+target+"/", "/*/")
	var parts []found
	if pattern {
		if parts, err = matchParts(dir, target); err != nil {
			return err
		}
	} else {
		p, err := actors.ParsePath(target)
		if err != nil {
			return err
		}
		parts = []found{{p, p.File(dir)}}
	}
	results := make([]result, len(parts))
	errs := forEach(ctx, parts, *parallel, stderr, "queried", func(ctx context.Context, i int, p found) error {
		r, err := queryPart(ctx, p.file, query)
		results[i] = r
		return err
	})
	var failed int
	for i, err := range errs {
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "fractal: %s: %v\n", parts[i].path, err)
		}
	}
	if failed < len(parts) {
		if err := printResults(stdout, *format, pattern, parts, results, errs); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("sql: %d of %d parts failed", failed, len(parts))
	}
	return nil
}

func queryPart(ctx context.Context, file, query string) (result, error) {
	var r result
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		return r, err
	}
	defer db.Close()
	err = db.View(ctx, func(tx *persistence.Tx) error {
		rows, err := tx.Query(query)
		if err != nil {
			return err
		}
		defer rows.Close()
		if r.cols, err = rows.Columns(); err != nil {
			return err
		}
		for rows.Next() {
			vals := make([]any, len(r.cols))
			ptrs := make([]any, len(vals))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			r.rows = append(r.rows, vals)
		}
		return rows.Err()
	})
	if refusedWrite(err) {
		err = fmt.Errorf("%w (%v)", errWriteRefused, err)
	}
	return r, err
}

// refusedWrite reports whether SQLite refused err's statement because it
// would write: the file is read-only (SQLITE_READONLY), or the read-only
// connection's authorizer denied it (SQLITE_AUTH).
func refusedWrite(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff // the primary code
	return code == sqlite3.SQLITE_READONLY || code == sqlite3.SQLITE_AUTH
}

func printable(v any) any {
	switch x := v.(type) {
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return fmt.Sprintf("x'%x'", x)
	case nil:
		return nil
	}
	return v
}

func printResults(w io.Writer, format string, tagged bool, parts []found, results []result, errs []error) error {
	var cols []string
	for i, r := range results {
		if errs[i] == nil && r.cols != nil {
			cols = r.cols
			break
		}
	}
	if tagged {
		cols = append([]string{"part"}, cols...)
	}
	var rows [][]any
	for i, r := range results {
		if errs[i] != nil {
			continue
		}
		for _, row := range r.rows {
			out := make([]any, 0, len(row)+1)
			if tagged {
				out = append(out, parts[i].path.String())
			}
			for _, v := range row {
				out = append(out, printable(v))
			}
			rows = append(rows, out)
		}
	}
	switch format {
	case "json":
		objs := make([]map[string]any, 0, len(rows))
		for _, row := range rows {
			o := make(map[string]any, len(cols))
			for i, c := range cols {
				if i < len(row) {
					o[c] = row[i]
				}
			}
			objs = append(objs, o)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(objs)
	case "csv":
		cw := csv.NewWriter(w)
		cw.Write(cols)
		for _, row := range rows {
			rec := make([]string, len(row))
			for i, v := range row {
				if v != nil {
					rec[i] = fmt.Sprint(v)
				}
			}
			cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, v := range row {
			if v == nil {
				cells[i] = "NULL"
			} else {
				cells[i] = fmt.Sprint(v)
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}
