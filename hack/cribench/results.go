package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// row is one line of the table: a figure for each runtime, their ratio
// (first/second), and the goal for that ratio if there is one.
type row struct {
	Key    string    `json:"key"`
	Label  string    `json:"label"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Ratio  float64   `json:"ratio,omitempty"`
	// Goal is the ratio to stay at or below; Met says whether this run did
	// (and, where it matters, nothing failed).
	Goal float64 `json:"goal,omitempty"`
	Met  *bool   `json:"met,omitempty"`
	// Section rows carry only a label.
	Section bool `json:"section,omitempty"`
	// cond must hold as well for the goal to be met.
	cond bool
}

type machine struct {
	CPUs       int       `json:"cpus"`
	MemKiB     int       `json:"mem_kib"`
	Kernel     string    `json:"kernel"`
	LoadBefore []float64 `json:"load_before"`
	LoadAfter  []float64 `json:"load_after"`
}

type results struct {
	Time     time.Time `json:"time"`
	Commit   string    `json:"commit"`
	Runtimes []string  `json:"runtimes"`
	Machine  machine   `json:"machine"`
	Params   params    `json:"params"`
	Rows     []*row    `json:"rows"`
	// Errors are failures the run went on after (a parallel client's pod
	// that did not start), by runtime.
	Errors map[string]string `json:"errors,omitempty"`

	figs []*figures
}

func newResults(p params, targets []*target) *results {
	r := &results{Time: time.Now().UTC(), Params: p, figs: make([]*figures, len(targets))}
	for _, t := range targets {
		r.Runtimes = append(r.Runtimes, t.Name)
	}
	r.Machine = machine{CPUs: runtime.NumCPU(), LoadBefore: loadavg(), Kernel: kernel()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		r.Machine.MemKiB, _ = procField(f, "MemTotal:")
		f.Close()
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		r.Commit = strings.TrimSpace(string(out))
	}
	return r
}

func (r *results) fill(i int, f *figures) { r.figs[i] = f }

func ms(d time.Duration) float64  { return float64(d) / float64(time.Millisecond) }
func sec(d time.Duration) float64 { return d.Seconds() }
func mib(kib int) float64         { return float64(kib) / 1024 }

// finish turns the raw figures into rows.
func (r *results) finish() {
	r.Machine.LoadAfter = loadavg()
	p := r.Params
	add := func(key, label, unit string, goal float64, cond bool, value func(*figures) (float64, bool)) {
		rw := &row{Key: key, Label: label, Unit: unit, Goal: goal, cond: cond}
		for _, f := range r.figs {
			v, ok := value(f)
			if !ok {
				v = math.NaN()
			}
			rw.Values = append(rw.Values, v)
		}
		r.Rows = append(r.Rows, rw)
	}
	section := func(label string) { r.Rows = append(r.Rows, &row{Label: label, Section: true}) }
	dur := func(get func(*figures) []time.Duration) func(*figures) (float64, bool) {
		return func(f *figures) (float64, bool) {
			ds := get(f)
			return ms(median(ds)), len(ds) > 0
		}
	}
	overhead := func(f *figures) time.Duration { return median(f.version) }

	section("client")
	add("crictl_version_ms", "crictl version (client start-up + one call)", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.version }))

	section(fmt.Sprintf("%d pods one after another, median per pod", p.Pods))
	add("runp_ms", "crictl runp", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.runp }))
	add("create_ms", "crictl create", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.create }))
	add("start_ms", "crictl start", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.start }))
	add("pod_start_ms", "pod start (runp + create + start)", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.podUp }))
	add("pod_start_net_ms", "pod start net of 3 client start-ups", "ms", 0.5, true, func(f *figures) (float64, bool) {
		return ms(median(f.podUp) - 3*overhead(f)), len(f.podUp) > 0
	})
	add("stopp_ms", "crictl stopp", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.stopp }))
	add("rmp_ms", "crictl rmp", "ms", 0, true, dur(func(f *figures) []time.Duration { return f.rmp }))
	add("stop_remove_total_s", fmt.Sprintf("stopp + rmp of %d pods, total", p.Pods), "s", 0.5, true, func(f *figures) (float64, bool) {
		return sec(f.stopRemoveAll), len(f.stopp) > 0
	})
	add("stop_remove_net_s", fmt.Sprintf("stopp + rmp of %d pods net of 2 client start-ups each", p.Pods), "s", 0, true, func(f *figures) (float64, bool) {
		return sec(f.stopRemoveAll - time.Duration(2*len(f.stopp))*overhead(f)), len(f.stopp) > 0
	})

	section(fmt.Sprintf("memory with %d pods running", p.Pods))
	add("daemon_rss_mib", "daemon VmRSS", "MiB", 0, true, func(f *figures) (float64, bool) { return mib(f.daemon.RSS), f.daemon.RSS > 0 })
	add("daemon_pss_mib", "daemon PSS", "MiB", 0.5, true, func(f *figures) (float64, bool) { return mib(f.daemon.PSS), f.daemon.RSS > 0 })
	add("shims", "shim processes", "", 0, true, func(f *figures) (float64, bool) { return float64(len(f.shims)), true })
	add("shim_rss_mib", "shim VmRSS, median per pod", "MiB", 0, true, func(f *figures) (float64, bool) {
		return mib(medianInt(f.shims, func(m memory) int { return m.RSS })), len(f.shims) > 0
	})
	add("shim_pss_mib", "shim PSS, median per pod", "MiB", 0.5, true, func(f *figures) (float64, bool) {
		return mib(medianInt(f.shims, func(m memory) int { return m.PSS })), len(f.shims) > 0
	})
	add("shim_pss_total_mib", "shim PSS, all shims", "MiB", 0, true, func(f *figures) (float64, bool) {
		t := 0
		for _, m := range f.shims {
			t += m.PSS
		}
		return mib(t), len(f.shims) > 0
	})

	section(fmt.Sprintf("%d pods from %d parallel clients", p.ParallelPods, p.Clients))
	allUp := len(r.figs) > 0 && r.figs[0] != nil && r.figs[0].parallelUp == p.ParallelPods
	add("parallel_start_s", "start all (runp + create + start), total", "s", 0.5, allUp, func(f *figures) (float64, bool) {
		return sec(f.parallelStart), f.parallelStart > 0
	})
	add("parallel_running", "pods ready with their container running", "", 0, true, func(f *figures) (float64, bool) {
		return float64(f.parallelUp), f.parallelStart > 0
	})
	add("parallel_remove_s", "stopp + rmp of all, total", "s", 0, true, func(f *figures) (float64, bool) {
		return sec(f.parallelRemove), f.parallelRemove > 0
	})

	if p.Critest != "" {
		section(fmt.Sprintf("critest -benchmark, %d samples, median", p.CritestN))
		for _, op := range []string{"CreatePod", "StatusPod", "StopPod", "RemovePod", "CreateContainer", "StartContainer", "StatusContainer", "StopContainer", "RemoveContainer"} {
			add("critest_"+strings.ToLower(op)+"_ms", op, "ms", 0, true, func(f *figures) (float64, bool) {
				d, ok := f.critest[op]
				return ms(d), ok
			})
		}
	}

	r.Errors = map[string]string{}
	for i, f := range r.figs {
		if f != nil && f.parallelErr != "" {
			r.Errors[r.Runtimes[i]] = f.parallelErr
		}
	}
	for _, rw := range r.Rows {
		if rw.Section || len(rw.Values) < 2 {
			continue
		}
		a, b := rw.Values[0], rw.Values[1]
		if b != 0 && !math.IsNaN(a) && !math.IsNaN(b) {
			rw.Ratio = a / b
		}
		if rw.Goal > 0 {
			met := rw.Ratio > 0 && rw.Ratio <= rw.Goal && rw.cond
			rw.Met = &met
		}
	}
}

// print writes the table.
func (r *results) print(w io.Writer) {
	fmt.Fprintf(w, "\ncorral benchmark, %s, commit %s\n", r.Time.Format(time.RFC3339), r.Commit)
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB, kernel %s; load average before %s, after %s\n\n",
		r.Machine.CPUs, float64(r.Machine.MemKiB)/(1<<20), r.Machine.Kernel, fmtLoad(r.Machine.LoadBefore), fmtLoad(r.Machine.LoadAfter))
	// Labels left, figures right: a label padded to the widest is a cell
	// that right-aligning cannot move.
	width := 0
	for _, rw := range r.Rows {
		width = max(width, utf8.RuneCountInString(rw.Label)+2)
	}
	pad := func(s string) string { return s + strings.Repeat(" ", width-utf8.RuneCountInString(s)) }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{pad(""), "unit"}
	header = append(header, r.Runtimes...)
	header = append(header, "ratio", "goal", "")
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, rw := range r.Rows {
		if rw.Section {
			fmt.Fprintln(tw, pad(rw.Label)+"\t"+strings.Repeat("\t", len(r.Runtimes)+4))
			continue
		}
		cells := []string{pad("  " + rw.Label), rw.Unit}
		for _, v := range rw.Values {
			cells = append(cells, fmtValue(v))
		}
		ratio, goal, met := "", "", ""
		if rw.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", rw.Ratio)
		}
		if rw.Goal > 0 {
			goal = fmt.Sprintf("≤ %.2f", rw.Goal)
			met = "not met"
			if rw.Met != nil && *rw.Met {
				met = "met"
			}
		}
		cells = append(cells, ratio, goal, met)
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	for name, e := range r.Errors {
		fmt.Fprintf(w, "%s: %s\n", name, e)
	}
}

// write saves the results as JSON, making the directory.
func (r *results) write(file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(data, '\n'), 0o644)
}

// MarshalJSON writes NaN (a figure a failed run did not reach) as null.
func (rw *row) MarshalJSON() ([]byte, error) {
	type plain row
	vals := make([]*float64, len(rw.Values))
	for i, v := range rw.Values {
		if !math.IsNaN(v) {
			vals[i] = &v
		}
	}
	return json.Marshal(struct {
		*plain
		Values []*float64 `json:"values"`
	}{(*plain)(rw), vals})
}

func fmtValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e6:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtLoad(l []float64) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = fmt.Sprintf("%.2f", v)
	}
	return strings.Join(s, " ")
}

func loadavg() []float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	var l [3]float64
	fmt.Sscan(string(data), &l[0], &l[1], &l[2])
	return l[:]
}

func kernel() string {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(data))
}

// median of durations; zero for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianInt(ms []memory, get func(memory) int) int {
	ds := make([]time.Duration, len(ms))
	for i, m := range ms {
		ds[i] = time.Duration(get(m))
	}
	return int(median(ds))
}
