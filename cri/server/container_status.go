package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus reports a container; verbose adds its pid and OCI spec.
func (s *Server) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	id := r.GetContainerId()
	if id == "" {
		return nil, fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.store.GetContainer(id)
	if err != nil {
		return nil, err
	}
	if err := s.notFoundIfPending(c.ID); err != nil {
		return nil, err
	}
	st := containerStatus(c)
	st.ImageRef = s.imageRef(c)
	// Who the process runs as and its limits are the spec's, which
	// UpdateContainerResources keeps current; the spec is there as long
	// as the container is.
	if sp, err := readSpec(c.Bundle); err == nil {
		st.User = spec.StatusUser(sp)
		st.Resources = spec.StatusResources(sp)
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if r.GetVerbose() {
		info := map[string]any{"pid": c.PID, "sandboxID": c.SandboxID, "bundle": c.Bundle}
		if b, err := os.ReadFile(filepath.Join(c.Bundle, "config.json")); err == nil {
			info["runtimeSpec"] = json.RawMessage(b)
		}
		b, err := json.Marshal(info)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(b)}
	}
	return resp, nil
}

// imageRef is the image a container runs as the CRI names it: a repo digest
// where the image has one, else its ID.
func (s *Server) imageRef(c metadata.Container) string {
	if s.images != nil {
		if img, err := s.images.Get(c.ImageID); err == nil && len(img.RepoDigests) > 0 {
			return img.RepoDigests[0]
		}
	}
	return c.ImageID
}

func containerConfig(c metadata.Container) *runtimeapi.ContainerConfig {
	var cfg runtimeapi.ContainerConfig
	_ = proto.Unmarshal(c.Config, &cfg)
	return &cfg
}

func criState(st metadata.ContainerState) runtimeapi.ContainerState {
	switch st {
	case metadata.ContainerCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case metadata.ContainerRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case metadata.ContainerExited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func containerStatus(c metadata.Container) *runtimeapi.ContainerStatus {
	cfg := containerConfig(c)
	return &runtimeapi.ContainerStatus{
		Id:          c.ID,
		Metadata:    &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
		State:       criState(c.State),
		CreatedAt:   unixNano(c.CreatedAt),
		StartedAt:   unixNano(c.StartedAt),
		FinishedAt:  unixNano(c.FinishedAt),
		ExitCode:    c.ExitCode,
		Image:       &runtimeapi.ImageSpec{Image: c.ImageRef, UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    c.ImageID,
		ImageId:     c.ImageID,
		Reason:      c.Reason,
		Message:     c.Message,
		Labels:      c.Labels,
		Annotations: c.Annotations,
		Mounts:      imagevolume.Status(cfg.GetMounts(), c.Extra),
		LogPath:     c.LogPath,
	}
}
