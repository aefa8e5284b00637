package shim

import (
	"bytes"
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
