package server

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/opencontainers/go-digest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageVolumes resolves the image mounts of cfg to pulled images. It runs
// before the container's record is written, which names their snapshots
// and so keeps them from garbage collection from then on.
func (s *Server) imageVolumes(cfg *runtimeapi.ContainerConfig) ([]imagevolume.Volume, error) {
	reqs, err := imagevolume.Requests(cfg)
	if err != nil || len(reqs) == 0 {
		return nil, err
	}
	var vols []imagevolume.Volume
	for i, m := range cfg.GetMounts() {
		if reqs[i] == nil {
			continue
		}
		ref := m.GetImage().GetImage()
		img, err := s.images.Get(ref)
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("mounts[%d].image: image %q is not on this node: pull it first: %w", i, ref, errdefs.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		if len(img.ChainIDs) == 0 {
			return nil, fmt.Errorf("mounts[%d].image: image %s has no layers: %w", i, img.ID, errdefs.ErrFailedPrecondition)
		}
		vols = append(vols, imagevolume.Volume{
			Index: i, ImageID: img.ID, Snapshot: img.ChainIDs[len(img.ChainIDs)-1], SubPath: m.GetImageSubPath(),
		})
	}
	return vols, nil
}

// mountImageVolumes mounts a new container's image volumes under its
// bundle and returns where each CRI mount binds from, by mount index.
func (s *Server) mountImageVolumes(bundle string, vols []imagevolume.Volume) (map[int]string, error) {
	if len(vols) == 0 {
		return nil, nil
	}
	out := map[int]string{}
	for _, v := range vols {
		lower, err := s.images.Snapshots().LowerDirs(digest.Digest(v.Snapshot))
		if err != nil {
			return nil, fmt.Errorf("mounts[%d].image %s: %w", v.Index, v.ImageID, err)
		}
		src, err := imagevolume.Mount(imagevolume.Dir(bundle), v, lower)
		if err != nil {
			return nil, fmt.Errorf("mounts[%d]: %w", v.Index, err)
		}
		out[v.Index] = src
	}
	return out, nil
}
