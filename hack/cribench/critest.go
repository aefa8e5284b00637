package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// critestFocus picks critest's pod and container lifecycle benchmarks. The
// image benchmarks pull from public.ecr.aws, which the offline registry
// does not serve, and "start a container from scratch" reports through
// Ginkgo only.
const critestFocus = "lifecycle of PodSandbox|basic operations on Container"

// critest runs critest -benchmark against t with the same parameters for
// every runtime and returns the median of each operation, by the names
// critest gives them (CreatePod, StartContainer, ...).
func (b *bench) critest(ctx context.Context, t *target) (map[string]time.Duration, error) {
	dir := filepath.Join(b.params.Work, t.Name, "critest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	paramsFile := filepath.Join(dir, "params.yaml")
	n := b.params.CritestN
	yaml := fmt.Sprintf("podsNumber: %d\npodsNumberParallel: 1\ncontainersNumber: %d\ncontainersNumberParallel: 1\nimagesNumber: 0\n", n, n)
	if err := os.WriteFile(paramsFile, []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	endpoint := "unix://" + t.Socket
	cmd := exec.CommandContext(ctx, b.params.Critest,
		"-benchmark", "-benchmarking-params-file", paramsFile, "-benchmarking-output-dir", dir,
		"-runtime-endpoint", endpoint, "-image-endpoint", endpoint, "-config", t.config,
		"-ginkgo.focus", critestFocus, "-ginkgo.no-color")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	os.WriteFile(filepath.Join(dir, "critest.log"), out.Bytes(), 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w (log: %s)", err, filepath.Join(dir, "critest.log"))
	}
	ops := map[string]time.Duration{}
	for _, f := range []string{"pod_benchmark_data.json", "container_benchmark_data.json"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		m, err := critestMedians(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for k, v := range m {
			ops[k] = v
		}
	}
	return ops, nil
}

// critestMedians reads one of critest's benchmark data files: operation
// names, and per sample the duration of each in nanoseconds.
func critestMedians(data []byte) (map[string]time.Duration, error) {
	var set struct {
		OperationsNames []string `json:"operationsNames"`
		Datapoints      []struct {
			OperationsDurationsNs []int64 `json:"operationsDurationsNs"`
		} `json:"datapoints"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, err
	}
	if len(set.Datapoints) == 0 {
		return nil, fmt.Errorf("no samples")
	}
	out := map[string]time.Duration{}
	for i, name := range set.OperationsNames {
		var ds []time.Duration
		for _, p := range set.Datapoints {
			if i < len(p.OperationsDurationsNs) {
				ds = append(ds, time.Duration(p.OperationsDurationsNs[i]))
			}
		}
		out[strings.TrimSpace(name)] = median(ds)
	}
	return out, nil
}
