package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// networkNotReadyReason is the reason the kubelet shows while pods cannot
// get a network; it is the one containerd and CRI-O use.
const networkNotReadyReason = "NetworkPluginNotReady"

// Status reports whether the runtime and the pod network are ready. The
// kubelet keeps the node NotReady, and schedules no pod needing a network,
// while NetworkReady is false.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			s.networkCondition(),
		}},
		// cri/spec applies supplemental_groups_policy (Merge and Strict),
		// and ContainerStatus reports the groups a process got.
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	// "" is the default handler, as the CRI defines: the kubelet looks its
	// features up under the name a RuntimeClass gives, "" for none.
	features := s.features.get(ctx, s.cfg, s.paths.root)
	resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: "", Features: features[s.cfg.DefaultRuntime]})
	for _, name := range s.cfg.Handlers() {
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: name, Features: features[name]})
	}
	if req.GetVerbose() {
		cfg, err := json.Marshal(s.cfg)
		if err != nil {
			return nil, fmt.Errorf("status: encode config: %w", err)
		}
		s.mu.Lock()
		podCIDR := s.podCIDR
		s.mu.Unlock()
		sec, err := json.Marshal(securityModules("/"))
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"config": string(cfg), "podCIDR": podCIDR, "security": string(sec)}
	}
	return resp, nil
}

// securityModules says which of the CRI's security profiles this node can
// honour, for `crictl info`: seccomp always (corral ships RuntimeDefault);
// AppArmor and SELinux never, since corral applies neither. A node that
// has one of them enabled is named, since its pods then run unconfined by
// it; a Localhost AppArmor profile is refused rather than ignored, and
// SELinux options are ignored, as on any node without SELinux.
func securityModules(root string) map[string]string {
	out := map[string]string{"seccomp": "supported: RuntimeDefault (containerd's profile), Localhost, Unconfined"}
	if b, err := os.ReadFile(filepath.Join(root, "sys/module/apparmor/parameters/enabled")); err == nil && strings.TrimSpace(string(b)) == "Y" {
		out["apparmor"] = "unsupported: AppArmor is enabled on this node, but corral applies no AppArmor profile; Localhost profiles are refused"
	} else {
		out["apparmor"] = "unsupported: AppArmor is not enabled on this node; Localhost profiles are refused"
	}
	if _, err := os.Stat(filepath.Join(root, "sys/fs/selinux/enforce")); err == nil {
		out["selinux"] = "unsupported: SELinux is enabled on this node, but corral sets no SELinux labels; selinux_options are ignored"
	} else {
		out["selinux"] = "unsupported: SELinux is not enabled on this node; selinux_options are ignored"
	}
	return out
}

// networkMessage says why pods have no network yet and what is missing, so
// whoever reads `kubectl describe node` or `crictl info` knows what to do.
// Pod networking through CNI is not built yet, so even a present config is
// not used; the message says that too.
// networkCondition is NetworkReady: the CNI configuration loads and every
// plugin it names is installed.
func (s *Server) networkCondition() *runtimeapi.RuntimeCondition {
	if s.net == nil {
		return &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: false, Reason: networkNotReadyReason, Message: networkMessage(s.cfg.Network.ConfDir)}
	}
	if ok, why := s.net.Ready(); !ok {
		return &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: false, Reason: networkNotReadyReason, Message: why}
	}
	return &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
}

func networkMessage(confDir string) string {
	files, err := cniConfigFiles(confDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("no CNI configuration: %s does not exist; install a CNI network config (*.conflist) there (network.conf_dir)", confDir)
	case err != nil:
		return fmt.Sprintf("cannot read the CNI configuration directory: %v", err)
	case len(files) == 0:
		return fmt.Sprintf("no CNI configuration: %s holds no *.conflist, *.conf or *.json file; install a CNI network config there (network.conf_dir)", confDir)
	}
	return fmt.Sprintf("CNI configuration %s is present, but corrald runs without a state dir, so it sets up no pod network", files[0])
}

// cniConfigFiles lists the CNI config files in dir in the order libcni
// loads them (lexical), as absolute paths.
func cniConfigFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
	}
	slices.Sort(files)
	return files, nil
}
