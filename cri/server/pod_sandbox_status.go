package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus reports a pod; verbose adds what corrald knows of it.
func (s *Server) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	id := r.GetPodSandboxId()
	if id == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.store.GetSandbox(id)
	if err != nil {
		return nil, err
	}
	if err := s.notFoundIfPending(sb.ID); err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: s.sandboxStatus(sb)}
	if r.GetVerbose() {
		info, err := json.Marshal(map[string]any{
			"pid":            sb.PID,
			"shimAddress":    sb.ShimAddress,
			"shimPid":        sb.ShimPID,
			"netnsPath":      sb.NetNSPath,
			"runtimeHandler": sb.RuntimeHandler,
			"bundle":         s.paths.sandboxBundle(sb.ID),
		})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

// sandboxConfig decodes the CRI config a pod was created with.
func sandboxConfig(sb metadata.Sandbox) *runtimeapi.PodSandboxConfig {
	var cfg runtimeapi.PodSandboxConfig
	_ = proto.Unmarshal(sb.Config, &cfg)
	return &cfg
}

func (s *Server) sandboxStatus(sb metadata.Sandbox) *runtimeapi.PodSandboxStatus {
	cfg := sandboxConfig(sb)
	state := runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	if sb.State == metadata.SandboxReady {
		state = runtimeapi.PodSandboxState_SANDBOX_READY
	}
	st := &runtimeapi.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       &runtimeapi.PodSandboxMetadata{Name: sb.Name, Namespace: sb.Namespace, Uid: sb.UID, Attempt: sb.Attempt},
		State:          state,
		CreatedAt:      sb.CreatedAt.UnixNano(),
		Network:        &runtimeapi.PodSandboxNetworkStatus{},
		Labels:         sb.Labels,
		Annotations:    sb.Annotations,
		RuntimeHandler: sb.RuntimeHandler,
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{
			Options: cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(),
		}},
	}
	if len(sb.IPs) > 0 {
		st.Network.Ip = sb.IPs[0]
		for _, ip := range sb.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	if st.Linux.Namespaces.Options == nil {
		st.Linux.Namespaces.Options = &runtimeapi.NamespaceOption{}
	}
	return st
}
