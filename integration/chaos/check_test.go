package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// listed is what corrald reports, by ID.
type listed struct {
	pods map[string]*runtimeapi.PodSandbox
	ctrs map[string]*runtimeapi.Container
}

func (e *env) list() (listed, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := listed{pods: map[string]*runtimeapi.PodSandbox{}, ctrs: map[string]*runtimeapi.Container{}}
	ps, err := e.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return l, fmt.Errorf("ListPodSandbox: %w", err)
	}
	for _, p := range ps.Items {
		l.pods[p.Id] = p
	}
	cs, err := e.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return l, fmt.Errorf("ListContainers: %w", err)
	}
	for _, c := range cs.Containers {
		l.ctrs[c.Id] = c
	}
	return l, nil
}

func (l listed) String() string {
	var b strings.Builder
	for _, id := range sortedKeys(l.pods) {
		fmt.Fprintf(&b, "pod %.12s %s;", id, l.pods[id].State)
	}
	for _, id := range sortedKeys(l.ctrs) {
		fmt.Fprintf(&b, "ctr %.12s %s;", id, l.ctrs[id].State)
	}
	return b.String()
}

// settle waits until corrald answers and what it lists holds still: the
// exits of containers that ended meanwhile have arrived.
func (e *env) settle() (listed, error) {
	deadline := time.Now().Add(60 * time.Second)
	var prev string
	var l listed
	var err error
	for time.Now().Before(deadline) {
		l, err = e.list()
		if err == nil {
			if s := l.String(); s == prev {
				return l, nil
			} else {
				prev = s
			}
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return l, fmt.Errorf("corrald did not settle in 60s: %w", err)
	}
	return l, nil
}

// check compares the model, corrald's lists and the host, and returns the
// breaches. The host is read directly, never through corrald.
func (e *env) check(m *model, l listed) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range l.pods {
		m.seen[id] = true
	}
	for id := range l.ctrs {
		m.seen[id] = true
	}

	// 1. Everything the clients were told exists is listed.
	for id, p := range m.pods {
		if l.pods[id] == nil {
			bad("pod %.12s (%s), made and not removed, is not listed", id, p.name)
		}
	}
	for id := range m.ctrs {
		if l.ctrs[id] == nil {
			bad("container %.12s, made and not removed, is not listed", id)
		}
	}

	// 2. What is listed agrees with the host.
	runc := runcContainers(e.state)
	shims := map[string]int{}
	for _, s := range shimProcs(e.state) {
		shims[s.id] = s.pid
	}
	for id, p := range l.pods {
		if p.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			if shims[id] == 0 {
				bad("pod %.12s is READY but no shim serves it", id)
			}
			if st, ok := runc[id]; !ok || !st.running {
				bad("pod %.12s is READY but its infra container does not run (runc: %+v, known %v)", id, st, ok)
			}
		}
	}
	for id, c := range l.ctrs {
		st, ok := runc[id]
		switch c.State {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			if !ok || !st.running {
				bad("container %.12s is RUNNING but its process is gone (runc: %+v, known %v)", id, st, ok)
			}
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			if ok && st.running {
				bad("container %.12s is EXITED but its process %d runs", id, st.pid)
			}
		}
		if l.pods[c.PodSandboxId] == nil {
			bad("container %.12s is listed but its pod %.12s is not", id, c.PodSandboxId)
		}
	}

	// 3. Exit codes: a container that ended by itself reports its code.
	for id, ct := range m.ctrs {
		c := l.ctrs[id]
		if c == nil || c.State != runtimeapi.ContainerState_CONTAINER_EXITED || ct.want < 0 || !ct.started || ct.stopped {
			continue
		}
		if p := m.pods[ct.pod]; p != nil && p.shimKilled {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := e.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		cancel()
		if err != nil {
			bad("ContainerStatus of exited container %.12s: %v", id, err)
			continue
		}
		code := st.GetStatus().GetExitCode()
		m.exitsChecked[id] = true
		if code != ct.want && !(ct.killed && code == 137) {
			bad("container %.12s exited by itself with %d, CRI reports %d (reason %q)", id, ct.want, code, st.GetStatus().GetReason())
		}
	}

	// 4. Nothing on the host that no record names.
	known := func(id string) bool { return l.pods[id] != nil || l.ctrs[id] != nil }
	for id, pid := range shims {
		if l.pods[id] == nil {
			bad("shim %d serves pod %.12s, which is not listed", pid, id)
		}
	}
	for id := range runc {
		if !known(id) {
			bad("runc has container %.12s, which is not listed", id)
		}
	}
	for _, d := range []struct {
		dir  string
		pods bool
	}{
		{filepath.Join(e.state, "sandboxes"), true}, {filepath.Join(e.root, "sandboxes"), true},
		{filepath.Join(e.state, "containers"), false}, {filepath.Join(e.root, "containers"), false},
		{filepath.Join(e.state, "netns"), true},
	} {
		for _, id := range dirNames(d.dir) {
			if (d.pods && l.pods[id] == nil) || (!d.pods && l.ctrs[id] == nil) {
				bad("%s/%.12s is left, and nothing by that ID is listed", d.dir, id)
			}
		}
	}
	for _, mnt := range mountsUnder(e.dir) {
		rel, _ := filepath.Rel(e.dir, mnt)
		parts := strings.Split(rel, string(filepath.Separator))
		switch {
		case mnt == e.root || mnt == filepath.Join(e.state, "netns"):
		case len(parts) >= 3 && (parts[1] == "sandboxes" || parts[1] == "containers" || parts[1] == "netns"):
			if !known(parts[2]) {
				bad("mount %s is left, and nothing by that ID is listed", mnt)
			}
		default:
			bad("mount %s belongs to nothing corrald makes", mnt)
		}
	}
	ips := ipReservations(e.ipam, e.network)
	for ip, id := range ips {
		if l.pods[id] == nil {
			bad("address %s is reserved for pod %.12s, which is not listed", ip, id)
		}
	}
	if ports := bridgePorts(e.bridge); len(ports) > len(ips) {
		bad("bridge %s has %d veths but only %d addresses are reserved: %v", e.bridge, len(ports), len(ips), ports)
	}
	for _, id := range portmapRules(e.network) {
		if l.pods[id] == nil {
			bad("iptables still maps ports for pod %.12s, which is not listed", id)
		}
	}
	// The IDs this run's corrald ever named: what the clients were told
	// of, and what its log names (a pod or container whose creation
	// failed, was rolled back or was cut short by a kill, which no
	// client ever heard of). Cgroups are named by ID outside the run's
	// dirs, so only these are its own.
	var gone = map[string]bool{}
	for id := range m.seen {
		if !known(id) {
			gone[id] = true
		}
	}
	for id := range e.loggedIDs() {
		if !known(id) {
			gone[id] = true
		}
	}
	for _, cg := range cgroupsOf(gone) {
		bad("cgroup %s is left, and %.12s is not listed", cg, filepath.Base(cg))
	}
	if entries := dirNames(filepath.Join(e.root, "content", "ingest")); len(entries) > 0 {
		bad("unfinished downloads left in content/ingest: %v", entries)
	}
	for _, name := range dirNames(filepath.Join(e.root, "snapshots")) {
		if strings.HasPrefix(name, "tmp-") {
			bad("unfinished snapshot work left: snapshots/%s", name)
		}
	}
	return v
}

// settleGrace is how long the host may lag behind what corrald lists: a
// dead shim's processes are killed just after its containers are marked
// exited, an exit is reported a moment after the process ends.
const settleGrace = 15 * time.Second

// checkSettled runs the checks until they pass or settleGrace is over,
// listing again each time, and returns what still fails.
func (e *env) checkSettled(m *model, l listed) []string {
	deadline := time.Now().Add(settleGrace)
	for {
		found := append(e.check(m, l), e.checkImages(l)...)
		if len(found) == 0 || time.Now().After(deadline) {
			return found
		}
		time.Sleep(time.Second)
		if next, err := e.list(); err == nil {
			l = next
		}
	}
}

// checkImages finds snapshots and blobs no listed image needs: what
// garbage collection after a pull cut short, or a removal, must not leave.
// What an image needs is read from the content store's own files: its
// config (the image ID) names the layers' diff IDs, whose chain IDs name
// the snapshots; its manifest (a repo digest) names the layer blobs.
// Every container runs images[0], which is never removed, so the listed
// images' needs are all there is.
func (e *env) checkImages(l listed) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	imgs, err := e.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return []string{fmt.Sprintf("ListImages: %v", err)}
	}
	blobDir := filepath.Join(e.root, "content", "blobs", "sha256")
	blob := func(d string) []byte {
		b, _ := os.ReadFile(filepath.Join(blobDir, strings.TrimPrefix(d, "sha256:")))
		return b
	}
	var v []string
	snaps, blobs := map[string]bool{}, map[string]bool{}
	for _, img := range imgs.Images {
		blobs[img.Id] = true
		var cfg struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(blob(img.Id), &cfg); err != nil {
			v = append(v, fmt.Sprintf("image %.19s is listed but its config blob is missing or unreadable: %v", img.Id, err))
			continue
		}
		chain := ""
		for _, d := range cfg.RootFS.DiffIDs {
			if chain == "" {
				chain = d
			} else {
				sum := sha256.Sum256([]byte(chain + " " + d))
				chain = "sha256:" + hex.EncodeToString(sum[:])
			}
			snaps[strings.TrimPrefix(chain, "sha256:")] = true
		}
		for _, rd := range img.RepoDigests {
			_, d, _ := strings.Cut(rd, "@")
			blobs[d] = true
			var man struct {
				Layers    []struct{ Digest string } `json:"layers"`
				Manifests []struct{ Digest string } `json:"manifests"`
			}
			json.Unmarshal(blob(d), &man)
			for _, l := range man.Layers {
				blobs[l.Digest] = true
			}
			for _, m := range man.Manifests {
				blobs[m.Digest] = true
			}
		}
	}
	for _, name := range dirNames(filepath.Join(e.root, "snapshots")) {
		if !strings.HasPrefix(name, "tmp-") && !snaps[name] {
			v = append(v, fmt.Sprintf("snapshot %.12s is left, and no listed image has that chain ID", name))
		}
	}
	for _, name := range dirNames(blobDir) {
		if !blobs["sha256:"+name] {
			v = append(v, fmt.Sprintf("blob sha256:%.12s is left, and no listed image refers to it", name))
		}
	}
	return v
}

// gc removes what corrald lists but no client knows of (what calls that
// failed half-way left, as the kubelet's garbage collection would), and
// pods beyond what keeps the checks quick.
func (e *env) gc(m *model, l listed) {
	m.mu.Lock()
	var pods []string
	for id := range l.pods {
		if m.pods[id] == nil {
			pods = append(pods, id)
		}
	}
	var ctrs []string
	for id, c := range l.ctrs {
		if m.ctrs[id] == nil && !slices.Contains(pods, c.PodSandboxId) {
			ctrs = append(ctrs, id)
		}
	}
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, id := range ctrs {
		e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id})
		e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	}
	for _, id := range pods {
		e.removePod(ctx, id)
	}
}

// removePod stops and removes a pod and its containers.
func (e *env) removePod(ctx context.Context, id string) error {
	if _, err := e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return err
	}
	cs, err := e.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: id}})
	if err != nil {
		return err
	}
	for _, c := range cs.Containers {
		if _, err := e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			return err
		}
	}
	_, err = e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	return err
}

// removeAll removes every pod through CRI, retrying what fails for a while.
func (e *env) removeAll(m *model) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		l, err := e.list()
		if err == nil && len(l.pods) == 0 && len(l.ctrs) == 0 {
			m.mu.Lock()
			clear(m.pods)
			clear(m.ctrs)
			m.mu.Unlock()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods still listed after 2 minutes of removing: %v (%v)", l, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for id := range l.pods {
			e.removePod(ctx, id)
		}
		cancel()
		time.Sleep(time.Second)
	}
}
