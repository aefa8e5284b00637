package shim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type closeBuffer struct {
	bytes.Buffer
	closed bool
}

func (c *closeBuffer) Close() error { c.closed = true; return nil }

func TestCRILogRecords(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	ts := at.Format(time.RFC3339Nano)
	long := strings.Repeat("x", maxLogLine+10)
	cases := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"one line", []string{"hello\n"}, []string{"stdout F hello"}},
		{"two lines in one write", []string{"a\nb\n"}, []string{"stdout F a", "stdout F b"}},
		{"line split over writes", []string{"hel", "lo\nwor", "ld\n"}, []string{"stdout F hello", "stdout F world"}},
		{"empty line", []string{"\n"}, []string{"stdout F "}},
		{"unfinished line flushed at close", []string{"bye"}, []string{"stdout F bye"}},
		{"long line in pieces", []string{long + "\n"}, []string{"stdout P " + long[:maxLogLine], "stdout F " + long[maxLogLine:]}},
		{"long unfinished line", []string{long}, []string{"stdout P " + long[:maxLogLine], "stdout F " + long[maxLogLine:]}},
		{"unfinished line of exactly one piece", []string{long[:maxLogLine]}, []string{"stdout P " + long[:maxLogLine], "stdout F "}},
		{"finished line of exactly one piece", []string{long[:maxLogLine], "\n"}, []string{"stdout P " + long[:maxLogLine], "stdout F "}},
		// Without a terminal the bytes are the process's own, "\r" too.
		{"carriage return kept without a terminal", []string{"a\r\n"}, []string{"stdout F a\r"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out closeBuffer
			f := &criLogFile{w: &out, now: func() time.Time { return at }}
			w := f.stream("stdout")
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("write %q: %d %v", s, n, err)
				}
			}
			w.Close()
			var want strings.Builder
			for _, l := range tc.want {
				want.WriteString(ts + " " + l + "\n")
			}
			if out.String() != want.String() {
				t.Errorf("got\n%q\nwant\n%q", out.String(), want.String())
			}
			if !out.closed {
				t.Error("file not closed after its only stream closed")
			}
		})
	}
}

func TestCRILogSharedByStreams(t *testing.T) {
	var out closeBuffer
	f := &criLogFile{w: &out, now: func() time.Time { return time.Unix(0, 0).UTC() }}
	o, e := f.stream("stdout"), f.stream("stderr")
	o.Write([]byte("out\n"))
	e.Write([]byte("err\n"))
	o.Close()
	if out.closed {
		t.Fatal("file closed while stderr still writes")
	}
	e.Close()
	if !out.closed {
		t.Fatal("file not closed after both streams")
	}
	if got := out.String(); !strings.Contains(got, " stdout F out\n") || !strings.Contains(got, " stderr F err\n") {
		t.Errorf("records %q", got)
	}
}

// TestCRILogTerminal: a terminal's output is marked at the top of the log,
// and the "\r" of each "\r\n" the tty made is dropped, whatever the writes'
// boundaries, while every other "\r" stays.
func TestCRILogTerminal(t *testing.T) {
	at := time.Date(2026, 12, 4, 9, 0, 0, 1, time.UTC)
	ts := at.Format(time.RFC3339Nano)
	long := strings.Repeat("y", maxLogLine-1)
	cases := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"nothing written", nil, nil},
		{"one line", []string{"hello\r\n"}, []string{"hello"}},
		{"two lines in one write", []string{"a\r\nb\r\n"}, []string{"a", "b"}},
		{"\\r\\n split over writes", []string{"hel", "lo\r", "\nx\r\n"}, []string{"hello", "x"}},
		{"bare carriage returns stay", []string{"50%\r100%\r\n"}, []string{"50%\r100%"}},
		{"the process's own \\r\\n", []string{"dos\r\r\n"}, []string{"dos\r"}},
		{"bare newline", []string{"raw\n"}, []string{"raw"}},
		{"unfinished line keeps its \\r", []string{"bye\r"}, []string{"bye\r"}},
		{"\\r ending a full piece waits for its \\n", []string{long + "\r", "\n"}, []string{"F " + long}},
		{"\\r ending a full piece, then text", []string{long + "\r", "z\r\n"}, []string{"P " + long + "\r", "F z"}},
		{"\\r ending a full piece at close", []string{long + "\r"}, []string{"F " + long + "\r"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out closeBuffer
			f, err := newCRILogFile(&out, true, func() time.Time { return at }, nil)
			if err != nil {
				t.Fatal(err)
			}
			o, e := f.stream("stdout"), f.stream("stderr")
			for _, s := range tc.writes {
				if n, err := o.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("write %q: %d %v", s, n, err)
				}
			}
			e.Close() // a terminal has no stderr: its copy ends at once
			o.Close()
			want := ts + " stdout F " + ttyMarker + "\n"
			for _, l := range tc.want {
				if !strings.HasPrefix(l, "P ") && !strings.HasPrefix(l, "F ") {
					l = "F " + l
				}
				want += ts + " stdout " + l + "\n"
			}
			if got := out.String(); got != want {
				t.Errorf("got\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestCRILogTerminalReopen: after rotation the new file starts with the
// marker too, so each file says what it holds on its own.
func TestCRILogTerminalReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	dest := "file://" + path + "?format=cri"
	outs, err := openOutputs(t.Context(), dest, dest, true)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(outs.stdout, "one\r\n")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := outs.reopen(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(outs.stdout, "two\r\n")
	outs.stdout.Close()
	outs.stderr.Close()
	outs.Close()
	for file, want := range map[string][]string{path + ".1": {ttyMarker, "one"}, path: {ttyMarker, "two"}} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for line := range strings.Lines(string(b)) {
			f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
			if len(f) != 4 || f[1] != "stdout" || f[2] != "F" {
				t.Fatalf("%s: record %q is not a full stdout record", file, line)
			}
			if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
				t.Fatalf("%s: record %q: %v", file, line, err)
			}
			got = append(got, f[3])
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s holds %q, want %q", file, got, want)
		}
	}
}
