package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/corral-runtime/corral/cri/shimclient"
)

// The OCI annotations corrald writes into every spec (cri/spec), which
// say what a bundle belongs to.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	annotationSandboxName   = "io.kubernetes.cri.sandbox-name"
	annotationSandboxNS     = "io.kubernetes.cri.sandbox-namespace"
	annotationContainerName = "io.kubernetes.cri.container-name"
)

// pod is a pod sandbox found under STATE, with what its files say about its
// shim. Nothing here comes from corrald.
type pod struct {
	ID         string      `json:"pod"`
	Namespace  string      `json:"namespace,omitempty"`
	Name       string      `json:"name,omitempty"`
	PID        int         `json:"pid,omitempty"`
	Address    string      `json:"address,omitempty"`
	Binary     string      `json:"binary,omitempty"`
	Replaced   bool        `json:"binary_replaced,omitempty"`
	Version    string      `json:"version,omitempty"` // what the shim's Connect reports
	Containers []container `json:"containers"`
	// Error says why the shim could not be reached, if it could not.
	Error string `json:"error,omitempty"`

	bundle string
}

// container is a task of a pod's shim: the pause process (its ID is the
// pod's) or an app container.
type container struct {
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Type   string `json:"type,omitempty"` // "sandbox" or "container"
	bundle string
}

// findPods reads STATE/sandboxes and STATE/containers.
func findPods(state string) ([]*pod, error) {
	dir := filepath.Join(state, "sandboxes")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist: is --state the one corrald runs with?", dir)
	}
	if err != nil {
		return nil, err
	}
	byID := map[string]*pod{}
	var pods []*pod
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := &pod{ID: e.Name(), bundle: filepath.Join(dir, e.Name())}
		if b, err := os.ReadFile(filepath.Join(p.bundle, "address")); err == nil {
			p.Address = strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(filepath.Join(p.bundle, "shim.pid")); err == nil {
			p.PID, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		ann := annotations(p.bundle)
		p.Namespace, p.Name = ann[annotationSandboxNS], ann[annotationSandboxName]
		p.Containers = []container{{ID: p.ID, Name: "(pause)", Type: "sandbox", bundle: p.bundle}}
		byID[p.ID] = p
		pods = append(pods, p)
	}
	cdir := filepath.Join(state, "containers")
	entries, _ = os.ReadDir(cdir)
	for _, e := range entries {
		bundle := filepath.Join(cdir, e.Name())
		ann := annotations(bundle)
		if p := byID[ann[annotationSandboxID]]; p != nil {
			p.Containers = append(p.Containers, container{ID: e.Name(), Name: ann[annotationContainerName], Type: ann[annotationContainerType], bundle: bundle})
		}
	}
	// The pause process first, then the containers by name.
	for _, p := range pods {
		slices.SortStableFunc(p.Containers[1:], func(a, b container) int { return strings.Compare(a.Name, b.Name) })
	}
	return pods, nil
}

// annotations reads a bundle's config.json annotations; none if unreadable.
func annotations(bundle string) map[string]string {
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err == nil {
		_ = json.Unmarshal(b, &spec)
	}
	return spec.Annotations
}

// describeProcess fills in the binary a shim runs, from /proc: after a
// shim binary was replaced on disk, a running shim's exe reads
// "PATH (deleted)".
func (p *pod) describeProcess() {
	if p.PID <= 0 {
		return
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	if err != nil {
		return
	}
	if cut, ok := strings.CutSuffix(exe, " (deleted)"); ok {
		exe, p.Replaced = cut, true
	}
	p.Binary = exe
}

// connect dials the pod's shim and checks it serves the pod: its Connect
// gives the pid of the process that answers, which wins over shim.pid.
func (p *pod) connect(ctx context.Context) (*shimclient.Shim, error) {
	if p.Address == "" {
		return nil, fmt.Errorf("pod %s has no shim address in %s", p.ID, filepath.Join(p.bundle, "address"))
	}
	sh, err := shimclient.Connect(ctx, p.Address)
	if err != nil {
		return nil, err
	}
	resp, err := sh.Task.Connect(ctx, &taskapi.ConnectRequest{ID: p.ID})
	if err != nil {
		sh.Close()
		return nil, fmt.Errorf("shim at %s: %w", p.Address, err)
	}
	if resp.ShimPid != 0 {
		p.PID = int(resp.ShimPid)
	}
	p.Version = resp.Version
	return sh, nil
}

// findPod resolves a POD argument: an ID, a unique ID prefix, or
// NAMESPACE/NAME.
func findPod(state, arg string) (*pod, error) {
	pods, err := findPods(state)
	if err != nil {
		return nil, err
	}
	var matches []*pod
	for _, p := range pods {
		switch {
		case p.ID == arg:
			return p, nil
		case strings.HasPrefix(p.ID, arg), p.Namespace+"/"+p.Name == arg:
			matches = append(matches, p)
		}
	}
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("no pod %q under %s (corralctl shims lists them)", arg, state)
	case 1:
		return matches[0], nil
	}
	var ids []string
	for _, p := range matches {
		ids = append(ids, p.ID[:min(12, len(p.ID))])
	}
	return nil, usageError{fmt.Sprintf("pod %q is ambiguous: %s", arg, strings.Join(ids, ", "))}
}

// findContainer resolves a CONTAINER argument within the pod.
func (p *pod) findContainer(arg string) (container, error) {
	var matches []container
	for _, c := range p.Containers {
		switch {
		case c.ID == arg:
			return c, nil
		case strings.HasPrefix(c.ID, arg), c.Name == arg:
			matches = append(matches, c)
		}
	}
	switch len(matches) {
	case 0:
		var names []string
		for _, c := range p.Containers {
			names = append(names, c.Name)
		}
		return container{}, fmt.Errorf("pod %s has no container %q (it has %s)", p.ID[:min(12, len(p.ID))], arg, strings.Join(names, ", "))
	case 1:
		return matches[0], nil
	}
	return container{}, usageError{fmt.Sprintf("container %q is ambiguous in pod %s", arg, p.ID)}
}

func runShims(e *env, args []string) error {
	fs := e.subFlags("shims")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("shims takes no arguments, got %q", rest)}
	}
	pods, err := findPods(e.state)
	if err != nil {
		return err
	}
	for _, p := range pods {
		ctx, cancel := e.context()
		if sh, err := p.connect(ctx); err != nil {
			p.Error = err.Error()
		} else {
			sh.Close()
		}
		cancel()
		p.describeProcess()
	}
	slices.SortFunc(pods, func(a, b *pod) int { return strings.Compare(a.Namespace+"/"+a.Name+a.ID, b.Namespace+"/"+b.Name+b.ID) })
	if e.output == "json" {
		if pods == nil {
			pods = []*pod{}
		}
		return e.writeJSON(pods)
	}
	t := e.table("POD", "NAME", "PID", "BINARY", "ADDRESS", "CONTAINERS")
	for _, p := range pods {
		bin := p.Binary
		if p.Replaced {
			bin += " (replaced)"
		}
		if p.Error != "" {
			bin = "unreachable: " + p.Error
		}
		var names []string
		for _, c := range p.Containers[1:] {
			names = append(names, c.Name)
		}
		t.row(short(p.ID), p.Namespace+"/"+p.Name, pidString(p.PID), bin, p.Address, fmt.Sprintf("%d %s", len(names), strings.Join(names, ",")))
	}
	return t.flush()
}

func short(id string) string { return id[:min(12, len(id))] }

func pidString(pid int) string {
	if pid <= 0 {
		return "-"
	}
	return strconv.Itoa(pid)
}
