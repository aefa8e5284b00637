package server

import (
	"context"
	"strings"

	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListContainers lists containers, filtered by ID (or a unique prefix),
// state, pod and labels.
func (s *Server) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := r.GetFilter()
	cs, err := s.store.ListContainers(func(c metadata.Container) bool {
		if s.pending.has(c.ID) {
			return false
		}
		if f.GetState() != nil && criState(c.State) != f.State.State {
			return false
		}
		return matchContainer(c, f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector())
	})
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListContainersResponse{Containers: make([]*runtimeapi.Container, 0, len(cs))}
	for _, c := range cs {
		st := containerStatus(c)
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: c.ID, PodSandboxId: c.SandboxID, Metadata: st.Metadata, Image: st.Image,
			ImageRef: s.imageRef(c), ImageId: c.ImageID, State: st.State, CreatedAt: st.CreatedAt,
			Labels: c.Labels, Annotations: c.Annotations,
		})
	}
	return resp, nil
}

// matchContainer is the filter ListContainers and ListContainerStats share:
// an ID prefix, a pod ID prefix and labels, each ignored when empty.
func matchContainer(c metadata.Container, id, pod string, labels map[string]string) bool {
	return strings.HasPrefix(c.ID, id) && strings.HasPrefix(c.SandboxID, pod) && matchLabels(labels, c.Labels)
}
