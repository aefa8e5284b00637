package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// target is one runtime under test.
type target struct {
	Name   string
	Socket string
	PID    int

	config string // crictl's config file for it
}

type bench struct {
	params  params
	targets []*target
	log     io.Writer
}

// figures are one runtime's raw measurements.
type figures struct {
	version        []time.Duration
	runp, create   []time.Duration
	start, podUp   []time.Duration
	stopp, rmp     []time.Duration
	stopRemoveAll  time.Duration
	daemon         memory
	shims          []memory
	parallelStart  time.Duration
	parallelRemove time.Duration
	parallelUp     int
	parallelErr    string
	critest        map[string]time.Duration
}

func (b *bench) run(ctx context.Context) (*results, error) {
	res := newResults(b.params, b.targets)
	figs := make([]*figures, len(b.targets))
	for i, t := range b.targets {
		figs[i] = &figures{}
		t.config = filepath.Join(b.params.Work, t.Name+"-crictl.yaml")
		cfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 120\npull-image-on-create: false\n", t.Socket, t.Socket)
		if err := os.WriteFile(t.config, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
	}
	defer func() {
		for i := range b.targets {
			res.fill(i, figs[i])
		}
		res.finish()
	}()

	// Untimed: the image, and one pod each, so that first-use costs (the
	// sandbox image containerd pulls, caches, CNI's first bridge) stay out
	// of the figures.
	for _, t := range b.targets {
		b.logf("%s: pulling %s and starting a warm-up pod", t.Name, b.params.Image)
		if _, _, err := b.crictl(ctx, t, "pull", b.params.Image); err != nil {
			return res, err
		}
		ids, err := b.startPod(ctx, t, "warmup", nil)
		if err != nil {
			return res, err
		}
		if err := b.removePod(ctx, t, ids.pod, nil); err != nil {
			return res, err
		}
	}

	b.logf("crictl version x%d on each", b.params.VersionRuns)
	for range b.params.VersionRuns {
		for i, t := range b.targets {
			_, d, err := b.crictl(ctx, t, "version")
			if err != nil {
				return res, err
			}
			figs[i].version = append(figs[i].version, d)
		}
	}

	b.logf("%d pods one after another on each", b.params.Pods)
	pods := make([][]string, len(b.targets))
	for n := range b.params.Pods {
		for i, t := range b.targets {
			ids, err := b.startPod(ctx, t, fmt.Sprintf("seq-%d", n), figs[i])
			if err != nil {
				return res, err
			}
			pods[i] = append(pods[i], ids.pod)
		}
	}
	b.logf("reading memory with %d pods running", b.params.Pods)
	if err := sleepCtx(ctx, settle); err != nil {
		return res, err
	}
	for i, t := range b.targets {
		m, err := readMemory(t.PID)
		if err != nil {
			return res, fmt.Errorf("%s daemon: %w", t.Name, err)
		}
		figs[i].daemon = m
		for _, pid := range shimPIDs(t.Socket) {
			if m, err := readMemory(pid); err == nil {
				figs[i].shims = append(figs[i].shims, m)
			}
		}
	}
	for n := range b.params.Pods {
		for i, t := range b.targets {
			if err := b.removePod(ctx, t, pods[i][n], figs[i]); err != nil {
				return res, err
			}
		}
	}
	for i := range b.targets {
		for n := range figs[i].stopp {
			figs[i].stopRemoveAll += figs[i].stopp[n] + figs[i].rmp[n]
		}
	}

	for i, t := range b.targets {
		b.logf("%s: %d pods from %d parallel clients", t.Name, b.params.ParallelPods, b.params.Clients)
		if err := b.parallel(ctx, t, figs[i]); err != nil {
			return res, err
		}
	}

	if b.params.Critest != "" {
		for i, t := range b.targets {
			b.logf("%s: critest -benchmark", t.Name)
			m, err := b.critest(ctx, t)
			if err != nil {
				return res, fmt.Errorf("%s: critest -benchmark: %w", t.Name, err)
			}
			figs[i].critest = m
		}
	}
	return res, nil
}

// crictl runs one crictl command against t and times it, process start to
// exit: what a user or a script of crictl calls pays.
func (b *bench) crictl(ctx context.Context, t *target, args ...string) (string, time.Duration, error) {
	cmd := exec.CommandContext(ctx, b.params.Crictl, append([]string{"--config", t.config}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	err := cmd.Run()
	d := time.Since(begin)
	if err != nil {
		return "", d, fmt.Errorf("%s: crictl %s: %w: %s", t.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), d, nil
}

type podIDs struct{ pod, container string }

// startPod runs runp, create and start for one pod named name, recording
// their times in f (when not nil).
func (b *bench) startPod(ctx context.Context, t *target, name string, f *figures) (podIDs, error) {
	podCfg, ctrCfg, err := b.writeConfigs(t, name)
	if err != nil {
		return podIDs{}, err
	}
	pod, dRunp, err := b.crictl(ctx, t, "runp", podCfg)
	if err != nil {
		return podIDs{}, err
	}
	ctr, dCreate, err := b.crictl(ctx, t, "create", "--no-pull", pod, ctrCfg, podCfg)
	if err != nil {
		return podIDs{pod: pod}, err
	}
	_, dStart, err := b.crictl(ctx, t, "start", ctr)
	if err != nil {
		return podIDs{pod: pod, container: ctr}, err
	}
	if f != nil {
		f.runp = append(f.runp, dRunp)
		f.create = append(f.create, dCreate)
		f.start = append(f.start, dStart)
		f.podUp = append(f.podUp, dRunp+dCreate+dStart)
	}
	return podIDs{pod: pod, container: ctr}, nil
}

// removePod runs stopp and rmp, recording their times in f (when not nil).
func (b *bench) removePod(ctx context.Context, t *target, pod string, f *figures) error {
	_, dStop, err := b.crictl(ctx, t, "stopp", pod)
	if err != nil {
		return err
	}
	_, dRm, err := b.crictl(ctx, t, "rmp", pod)
	if err != nil {
		return err
	}
	if f != nil {
		f.stopp = append(f.stopp, dStop)
		f.rmp = append(f.rmp, dRm)
	}
	return nil
}

// writeConfigs writes the pod and container configs for a pod: a busybox
// container running sleep, logs under the work dir.
func (b *bench) writeConfigs(t *target, name string) (pod, ctr string, err error) {
	dir := filepath.Join(b.params.Work, t.Name, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	podCfg := map[string]any{
		"metadata": map[string]any{
			"name": "bench-" + name, "namespace": "cribench", "uid": t.Name + "-" + name, "attempt": 0,
		},
		"log_directory": filepath.Join(dir, "logs"),
		"labels":        map[string]string{"cribench": "1"},
		"linux":         map[string]any{},
	}
	ctrCfg := map[string]any{
		"metadata": map[string]any{"name": "sleep"},
		"image":    map[string]any{"image": b.params.Image},
		"command":  []string{"sleep", "3600"},
		"log_path": "sleep.log",
		"linux":    map[string]any{},
	}
	pod, ctr = filepath.Join(dir, "pod.json"), filepath.Join(dir, "container.json")
	for file, v := range map[string]any{pod: podCfg, ctr: ctrCfg} {
		data, err := json.Marshal(v)
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return "", "", err
		}
	}
	return pod, ctr, nil
}

// parallel starts ParallelPods pods from Clients clients at once, each
// client one pod after another, and times the whole; then checks that every
// pod and container runs, and removes them the same way, timed.
func (b *bench) parallel(ctx context.Context, t *target, f *figures) error {
	per := b.params.ParallelPods / b.params.Clients
	started := make([][]string, b.params.Clients)
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range b.params.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range per {
				ids, err := b.startPod(ctx, t, fmt.Sprintf("par-%d-%d", c, n), nil)
				if ids.pod != "" {
					started[c] = append(started[c], ids.pod)
				}
				if err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	f.parallelStart = time.Since(begin)
	if firstErr != nil {
		f.parallelErr = firstErr.Error()
		b.logf("%s: %v", t.Name, firstErr)
	}

	ready, _, err := b.crictl(ctx, t, "pods", "-q", "--state", "ready", "--label", "cribench=1")
	if err != nil {
		return err
	}
	// Only these pods exist now: crictl adds no labels to containers.
	running, _, err := b.crictl(ctx, t, "ps", "-q", "--state", "running")
	if err != nil {
		return err
	}
	f.parallelUp = min(len(strings.Fields(ready)), len(strings.Fields(running)))

	firstErr = nil
	begin = time.Now()
	for c := range b.params.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, pod := range started[c] {
				if err := b.removePod(ctx, t, pod, nil); err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	f.parallelRemove = time.Since(begin)
	return firstErr
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
