package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Issue 7's log acceptance: the shim writes every line, in the CRI format,
// whatever corrald does meanwhile, and reopens the file on rotation.

// criRecord is one line of a CRI log file.
type criRecord struct {
	at     time.Time
	stream string
	tag    string
	text   string
}

var criLine = regexp.MustCompile(`^(\S+) (stdout|stderr) (P|F) (.*)$`)

// readCRILog parses a CRI log file strictly: every line must be a record
// with an RFC 3339 time.
func readCRILog(t *testing.T, path string) []criRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []criRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		m := criLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("%s:%d is not a CRI log record: %q", path, n, sc.Text())
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("%s:%d: time %q: %v", path, n, m[1], err)
		}
		recs = append(recs, criRecord{at, m[2], m[3], m[4]})
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("%s does not end with a newline", path)
	}
	return recs
}

// checkNumbered checks that the records of stream are "PREFIX 0" to
// "PREFIX n-1", in order, all full lines, and returns how many there are.
func checkNumbered(t *testing.T, recs []criRecord, stream, prefix string, n int) {
	t.Helper()
	next := 0
	for _, r := range recs {
		if r.stream != stream {
			continue
		}
		want := fmt.Sprintf("%s %d", prefix, next)
		if r.text != want || r.tag != "F" {
			t.Fatalf("%s record %d is %q (%s), want %q (F)", stream, next, r.text, r.tag, want)
		}
		next++
	}
	if next != n {
		t.Fatalf("%s has %d of the %d lines", stream, next, n)
	}
}

// crictlSplit runs crictl and returns its stdout and stderr apart.
func (e *podEnv) crictlSplit(t *testing.T, timeout time.Duration, args ...string) (string, string, error) {
	t.Helper()
	ep := "unix://" + e.d.socket
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, crictlBinary(t), append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("crictl %v still running after %s", args, timeout)
	}
	return out.String(), dropCrictlWarnings(errOut.String()), err
}

// dropCrictlWarnings removes crictl's own log lines (a missing
// /etc/crictl.yaml) from its stderr, leaving what the container wrote.
func dropCrictlWarnings(s string) string {
	var keep []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "time=\"") || !strings.Contains(l, "level=warning") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// TestLogs10000Lines: 10,000 numbered lines on each stream reach the log in
// order and in the CRI format; crictl logs --tail and -f behave.
func TestLogs10000Lines(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("logs")
	podID := e.runPod(t, pod)
	const n = 10000
	cfg := e.containerConfig("count", "sh", "-c",
		fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`, n))
	cid, _ := e.runContainer(t, podID, pod, cfg)
	st := e.waitContainer(t, cid, runtimeapi.ContainerState_CONTAINER_EXITED, 60*time.Second)
	if st.ExitCode != 0 {
		t.Fatalf("exit code %d", st.ExitCode)
	}
	recs := readCRILog(t, st.LogPath)
	checkNumbered(t, recs, "stdout", "out", n)
	checkNumbered(t, recs, "stderr", "err", n)
	for i := 1; i < len(recs); i++ {
		if recs[i].at.Before(recs[i-1].at) {
			t.Fatalf("record %d goes back in time: %s after %s", i, recs[i].at, recs[i-1].at)
		}
	}

	// --tail 5: the last five records, each on its own stream.
	out, errOut, err := e.crictlSplit(t, time.Minute, "logs", "--tail", "5", cid)
	if err != nil {
		t.Fatalf("crictl logs --tail 5: %v\n%s", err, errOut)
	}
	var wantOut, wantErr string
	for _, r := range recs[len(recs)-5:] {
		if r.stream == "stdout" {
			wantOut += r.text + "\n"
		} else {
			wantErr += r.text + "\n"
		}
	}
	if out != wantOut || errOut != wantErr {
		t.Errorf("crictl logs --tail 5: stdout %q stderr %q; want %q and %q", out, errOut, wantOut, wantErr)
	}

	// A line longer than 16 KiB is cut into partial (P) records that join
	// back into it; crictl logs joins them too.
	long := e.containerConfig("long", "sh", "-c", `head -c 40000 /dev/zero | tr '\0' x; echo; echo short`)
	lid, _ := e.runContainer(t, podID, pod, long)
	lst := e.waitContainer(t, lid, runtimeapi.ContainerState_CONTAINER_EXITED, 60*time.Second)
	lrecs := readCRILog(t, lst.LogPath)
	var tags, joined string
	for _, r := range lrecs {
		tags += r.tag
		if r.text != "short" {
			joined += r.text
		}
	}
	if tags != "PPFF" || joined != strings.Repeat("x", 40000) {
		t.Errorf("a 40000-byte line gave records %q of %d bytes in all, want PPFF and every byte", tags, len(joined))
	}
	if out, _, err := e.crictlSplit(t, time.Minute, "logs", lid); err != nil || out != strings.Repeat("x", 40000)+"\nshort\n" {
		t.Errorf("crictl logs of the long line: %d bytes, %v", len(out), err)
	}

	// -f follows a running container and ends when it exits.
	follow := e.containerConfig("follow", "sh", "-c", `i=0; while [ $i -lt 30 ]; do echo "line $i"; i=$((i+1)); sleep 0.1; done`)
	fid, _ := e.runContainer(t, podID, pod, follow)
	start := time.Now()
	out, errOut, err = e.crictlSplit(t, time.Minute, "logs", "-f", fid)
	if err != nil {
		t.Fatalf("crictl logs -f: %v\n%s", err, errOut)
	}
	var want strings.Builder
	for i := range 30 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	if out != want.String() {
		t.Errorf("crictl logs -f printed %q, want %q", out, want.String())
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("crictl logs -f returned after %s: it did not follow a container that runs 3 s", d)
	}
	e.removePod(t, podID)
}

// TestLogsSurviveCorraldKill: corrald is killed while a container writes a
// line every 10 ms for 5 s and restarted later; no line is missing.
func TestLogsSurviveCorraldKill(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("logkill")
	podID := e.runPod(t, pod)
	const n = 500
	cfg := e.containerConfig("ticker", "sh", "-c",
		fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "tick $i"; i=$((i+1)); sleep 0.01; done`, n))
	cid, _ := e.runContainer(t, podID, pod, cfg)
	st, _ := e.containerStatus(t, cid)
	logPath := st.LogPath
	waitUntil(t, 30*time.Second, "the container has logged", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("\n")) >= 20, fmt.Sprintf("%d bytes", len(b))
	})
	e.killDaemon(t)
	// Down for a while the container keeps writing.
	b, _ := os.ReadFile(logPath)
	before := bytes.Count(b, []byte("\n"))
	waitUntil(t, 30*time.Second, "the log grows while corrald is down", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		now := bytes.Count(b, []byte("\n"))
		return now >= before+50, fmt.Sprintf("%d lines, %d when corrald died", now, before)
	})
	e.restart(t)
	st = e.waitContainer(t, cid, runtimeapi.ContainerState_CONTAINER_EXITED, 60*time.Second)
	if st.ExitCode != 0 {
		t.Fatalf("exit code %d", st.ExitCode)
	}
	checkNumbered(t, readCRILog(t, logPath), "stdout", "tick", n)
	e.removePod(t, podID)
}

// TestLogsReopen rotates a running container's log as the kubelet does:
// rename, then ReopenContainerLog; new lines go to the new file and none
// is lost across the two.
func TestLogsReopen(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("logrotate")
	podID := e.runPod(t, pod)
	const n = 400
	cfg := e.containerConfig("ticker", "sh", "-c",
		fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "tick $i"; i=$((i+1)); sleep 0.01; done; sleep 1000`, n))
	cid, _ := e.runContainer(t, podID, pod, cfg)
	st, _ := e.containerStatus(t, cid)
	logPath := st.LogPath
	waitUntil(t, 30*time.Second, "the container has logged", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return bytes.Count(b, []byte("\n")) >= 50, fmt.Sprintf("%d bytes", len(b))
	})
	rotated := logPath + ".20260101-000000"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: cid}); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
	if _, err := os.Stat(logPath); err != nil {
		t.Fatalf("no new log file after ReopenContainerLog: %v", err)
	}
	waitUntil(t, 60*time.Second, "every line is written", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, fmt.Appendf(nil, "tick %d\n", n-1)), fmt.Sprintf("%d bytes in the new file", len(b))
	})
	old, cur := readCRILog(t, rotated), readCRILog(t, logPath)
	if len(old) == 0 || len(cur) == 0 {
		t.Fatalf("rotated file has %d records, new file %d: both should have some", len(old), len(cur))
	}
	checkNumbered(t, append(old, cur...), "stdout", "tick", n)
	t.Logf("%d lines before the rotation, %d after", len(old), len(cur))

	for _, tc := range []struct {
		name string
		id   string
		code codes.Code
	}{
		{"empty id", "", codes.InvalidArgument},
		{"unknown container", strings.Repeat("0", 64), codes.NotFound},
	} {
		_, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: tc.id})
		if code, msg := grpcCode(err); code != tc.code {
			t.Errorf("ReopenContainerLog %s: %v (%s), want %s", tc.name, code, msg, tc.code)
		}
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	_, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: cid})
	if code, msg := grpcCode(err); code != codes.FailedPrecondition {
		t.Errorf("ReopenContainerLog of a stopped container: %v (%s), want FailedPrecondition", code, msg)
	}
	e.removePod(t, podID)
}

// TestLogsTerminal: a container with a terminal logs its output as stdout
// without the "\r" the terminal puts before each "\n", after a first record
// that says the stream is a terminal; every line stays a CRI record that
// the kubelet's parser takes, and a rotated log starts with the marker too.
func TestLogsTerminal(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("logtty")
	podID := e.runPod(t, pod)
	cfg := e.containerConfig("tty", "sh", "-c",
		`echo one; echo two >&2; printf 'bar\r50%%\r100%%\n'; while [ ! -e /rotated ]; do sleep 0.05; done; echo three; sleep 1000`)
	cfg.Tty = true
	cid, _ := e.runContainer(t, podID, pod, cfg)
	st, _ := e.containerStatus(t, cid)
	logPath := st.LogPath
	waitUntil(t, 30*time.Second, "the container has logged", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte("100%\n")), fmt.Sprintf("%q", b)
	})
	isMarker := func(r criRecord) bool {
		return r.stream == "stdout" && r.tag == "F" && strings.HasPrefix(r.text, "[corral] ") && strings.Contains(r.text, "terminal (tty)")
	}
	texts := func(recs []criRecord) []string {
		var s []string
		for _, r := range recs {
			if r.stream != "stdout" || r.tag != "F" {
				t.Errorf("record %+v: a terminal's output is one stream, logged as stdout, in full lines", r)
			}
			s = append(s, r.text)
		}
		return s
	}
	recs := readCRILog(t, logPath)
	if len(recs) == 0 || !isMarker(recs[0]) {
		t.Fatalf("the log does not start with the terminal marker: %+v", recs)
	}
	marker := recs[0].text
	if got, want := texts(recs[1:]), []string{"one", "two", "bar\r50%\r100%"}; !slices.Equal(got, want) {
		t.Errorf("records %q, want %q (\\r\\n logged as \\n, other \\r kept)", got, want)
	}
	out, errOut, err := e.crictlSplit(t, time.Minute, "logs", cid)
	if want := marker + "\none\ntwo\nbar\r50%\r100%\n"; err != nil || out != want || errOut != "" {
		t.Errorf("crictl logs: stdout %q stderr %q (%v), want %q on stdout", out, errOut, err, want)
	}

	// Rotation: the new file starts with the marker as well.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.ReopenContainerLog(e.ctx(), &runtimeapi.ReopenContainerLogRequest{ContainerId: cid}); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
	if _, code := e.execIn(t, cid, "touch", "/rotated"); code != 0 {
		t.Fatalf("touch /rotated: exit %d", code)
	}
	waitUntil(t, 30*time.Second, "the container logs after the rotation", func() (bool, string) {
		b, _ := os.ReadFile(logPath)
		return bytes.Contains(b, []byte("three\n")), fmt.Sprintf("%q", b)
	})
	if got, want := texts(readCRILog(t, logPath)), []string{marker, "three"}; !slices.Equal(got, want) {
		t.Errorf("after rotation the log holds %q, want %q", got, want)
	}
	if out, _, err := e.crictlSplit(t, time.Minute, "logs", "--tail", "1", cid); err != nil || out != "three\n" {
		t.Errorf("crictl logs --tail 1: %q, %v", out, err)
	}
	e.removePod(t, podID)
}
