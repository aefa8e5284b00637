package shim

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// FuzzCRILog writes arbitrary container output, cut into arbitrary writes
// on both streams, through the CRI log writer, and reads the file back as
// the kubelet does. Every line must be one well-formed record; a record's
// text never holds a newline and never exceeds maxLogLine; and joining each
// stream's records (P pieces up to their F) gives back exactly what the
// container wrote, an unfinished last line ending with the stream.
func FuzzCRILog(f *testing.F) {
	long := strings.Repeat("x", maxLogLine)
	for _, seed := range []struct {
		data, cuts string
	}{
		{"hello\nworld\n", "\x03\x05"},
		{"no newline at the end", ""},
		{"\n\n\n", "\x01\x81\x01"},
		{"a\r\nb\x00c\xff\xfe\n", "\x02"},
		{long + "\n", "\x10"},
		{long, ""},
		{long + long + "tail", "\xff\x7f"},
		{"stdout\x80stderr\n", "\x06\x87"},
	} {
		f.Add([]byte(seed.data), []byte(seed.cuts))
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) { checkCRILog(t, data, cuts, false) })
}

// FuzzCRILogTerminal is FuzzCRILog for a process with a terminal: the log
// starts with the marker, and the records join to what the process wrote
// with each "\r\n" as "\n".
func FuzzCRILogTerminal(f *testing.F) {
	long := strings.Repeat("x", maxLogLine-1)
	for _, seed := range []struct {
		data, cuts string
	}{
		{"hello\r\nworld\r\n", "\x03\x05"},
		{"split\r\n", "\x06\x01"},
		{"bar\r50%\r\r\n\r", ""},
		{long + "\r\n", "\x7f"},
		{long + "\rx" + long + "\r", "\x7f\x7f\x7f"},
	} {
		f.Add([]byte(seed.data), []byte(seed.cuts))
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) { checkCRILog(t, data, cuts, true) })
}

func checkCRILog(t *testing.T, data, cuts []byte, tty bool) {
	t.Helper()
	at := time.Date(2026, 12, 3, 10, 0, 0, 5, time.UTC)
	var out closeBuffer
	file, err := newCRILogFile(&out, tty, func() time.Time { return at }, nil)
	if err != nil {
		t.Fatal(err)
	}
	streams := [2]struct {
		name  string
		w     interface{ Write([]byte) (int, error) }
		wrote []byte
	}{{name: "stdout"}, {name: "stderr"}}
	closers := [2]func() error{}
	for i := range streams {
		w := file.stream(streams[i].name)
		streams[i].w, closers[i] = w, w.Close
	}
	// Each cut byte is one write: the low 7 bits its length (0 means
	// the rest), the high bit which stream.
	rest := data
	for _, c := range cuts {
		if len(rest) == 0 {
			break
		}
		n := int(c & 0x7f)
		if n == 0 || n > len(rest) {
			n = len(rest)
		}
		s := &streams[c>>7]
		if got, err := s.w.Write(rest[:n]); err != nil || got != n {
			t.Fatalf("Write of %d bytes: %d, %v", n, got, err)
		}
		s.wrote = append(s.wrote, rest[:n]...)
		rest = rest[n:]
	}
	if len(rest) > 0 {
		streams[0].w.Write(rest)
		streams[0].wrote = append(streams[0].wrote, rest...)
	}
	for _, c := range closers {
		if err := c(); err != nil {
			t.Fatal(err)
		}
	}
	if !out.closed {
		t.Fatal("log file not closed after both streams")
	}

	got := map[string][]byte{}
	log := out.Bytes()
	if len(log) > 0 && log[len(log)-1] != '\n' {
		t.Fatalf("log does not end with a newline: %q", log)
	}
	ts := at.Format(time.RFC3339Nano)
	if tty {
		marker := ts + " stdout F " + ttyMarker + "\n"
		if !bytes.HasPrefix(log, []byte(marker)) {
			t.Fatalf("a terminal's log does not start with the marker: %q", log[:min(len(log), len(marker))])
		}
		log = log[len(marker):]
	}
	for line := range bytes.Lines(log) {
		line = line[:len(line)-1]
		parts := bytes.SplitN(line, []byte(" "), 4)
		if len(parts) != 4 {
			t.Fatalf("record %q has fewer than 4 fields", line)
		}
		if string(parts[0]) != ts {
			t.Fatalf("record %q: time %q, want %q", line, parts[0], ts)
		}
		stream, tag, text := string(parts[1]), string(parts[2]), parts[3]
		if stream != "stdout" && stream != "stderr" {
			t.Fatalf("record %q: stream %q", line, stream)
		}
		if len(text) > maxLogLine {
			t.Fatalf("record of %d bytes, longer than %d", len(text), maxLogLine)
		}
		switch tag {
		case "F":
			got[stream] = append(append(got[stream], text...), '\n')
		case "P":
			got[stream] = append(got[stream], text...)
		default:
			t.Fatalf("record %q: tag %q", line, tag)
		}
	}
	for _, s := range streams {
		want := s.wrote
		if tty {
			want = bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))
		}
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(bytes.Clone(want), '\n')
		}
		if g := got[s.name]; !bytes.Equal(g, want) {
			i := 0
			for i < len(g) && i < len(want) && g[i] == want[i] {
				i++
			}
			t.Fatalf("%s: the records join to %d bytes, the container wrote %d (with its last newline %d); first difference at byte %d: %q vs %q",
				s.name, len(g), len(s.wrote), len(want), i, g[i:min(len(g), i+20)], want[i:min(len(want), i+20)])
		}
	}
}
