package main

import (
	"context"
	"encoding/json"
	"strings"
	"text/tabwriter"
)

// table writes aligned columns, a header line first.
type table struct{ w *tabwriter.Writer }

func (e *env) table(header ...string) *table {
	t := &table{w: tabwriter.NewWriter(e.stdout, 0, 8, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		// A tab or newline in a cell would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	t.w.Write([]byte(strings.Join(cells, "\t") + "\n"))
}

func (t *table) flush() error { return t.w.Flush() }

// writeJSON prints v as indented JSON.
func (e *env) writeJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// context bounds one call to a shim or to corrald.
func (e *env) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.timeout)
}
