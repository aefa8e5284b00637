package shim

import (
	"bytes"
	"testing"
	"time"
)

// discardCloser counts what the log file would get.
type discardCloser struct{ n int }

func (d *discardCloser) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }
func (d *discardCloser) Close() error                { return nil }

// BenchmarkCRILog formats container output into CRI log records, as the
// shim does for every line a container prints: 80-byte lines, arriving in
// the 32 KiB reads of a pipe, one at a time (an interactive program), and
// as one line longer than a record (split into partial records):
//
//	go test -run '^$' -bench CRILog -benchmem ./shim/
func BenchmarkCRILog(b *testing.B) {
	line := append(bytes.Repeat([]byte("x"), 79), '\n')
	for _, tc := range []struct {
		name  string
		chunk []byte
	}{
		{"pipe-reads", bytes.Repeat(line, 32<<10/len(line))},
		{"single-lines", line},
		{"long-line", append(bytes.Repeat([]byte("y"), 3*maxLogLine), '\n')},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := &criLogFile{w: &discardCloser{}, now: time.Now}
			w := f.stream("stdout")
			defer w.Close()
			b.SetBytes(int64(len(tc.chunk)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(tc.chunk); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
