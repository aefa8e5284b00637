package server

import (
	"context"
	"strings"

	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListPodSandbox lists the pods, filtered by ID (or a unique prefix), state
// and labels.
func (s *Server) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := r.GetFilter()
	sbs, err := s.store.ListSandboxes(func(sb metadata.Sandbox) bool {
		if s.pending.has(sb.ID) {
			return false
		}
		if f == nil {
			return true
		}
		if f.Id != "" && !strings.HasPrefix(sb.ID, f.Id) {
			return false
		}
		if f.State != nil {
			ready := sb.State == metadata.SandboxReady
			if (f.State.State == runtimeapi.PodSandboxState_SANDBOX_READY) != ready {
				return false
			}
		}
		return matchLabels(f.LabelSelector, sb.Labels)
	})
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxResponse{Items: make([]*runtimeapi.PodSandbox, 0, len(sbs))}
	for _, sb := range sbs {
		st := s.sandboxStatus(sb)
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id: st.Id, Metadata: st.Metadata, State: st.State, CreatedAt: st.CreatedAt,
			Labels: st.Labels, Annotations: st.Annotations, RuntimeHandler: st.RuntimeHandler,
		})
	}
	return resp, nil
}

// matchLabels reports whether labels carry every key=value of selector.
func matchLabels(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
