package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/registry"
	"github.com/corral-runtime/corral/cri/snapshot"
	"github.com/corral-runtime/corral/metadata"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	// downloadConcurrency is how many layers of one image download at once.
	downloadConcurrency = 3
	// progressInterval is how often a running pull logs its progress.
	progressInterval = 5 * time.Second
)

// Pull fetches ref (normalized as docker does) for this node's platform and
// records it. Concurrent pulls of one reference share the work.
func (s *Service) Pull(ctx context.Context, ref string, auth *runtimeapi.AuthConfig) (metadata.Image, error) {
	normalized, err := registry.Normalize(ref)
	if err != nil {
		return metadata.Image{}, err
	}
	a, err := registry.Authenticator(auth)
	if err != nil {
		return metadata.Image{}, err
	}
	// Credentials are part of the key: a pull with other credentials must
	// not ride on one that may fail (or succeed) for reasons of its own.
	key := normalized + "\x00" + authKey(auth)
	return s.pulls.do(ctx, key, func(ctx context.Context) (metadata.Image, error) {
		start := time.Now()
		img, err := s.pull(ctx, normalized, a)
		s.metrics.ObservePull(time.Since(start), err)
		return img, err
	})
}

func authKey(a *runtimeapi.AuthConfig) string {
	if a == nil {
		return ""
	}
	return a.Username + "\x00" + a.Password + "\x00" + a.Auth + "\x00" + a.IdentityToken + "\x00" + a.RegistryToken
}

// pullState follows one pull's bytes for the progress log and the stall
// watchdog.
type pullState struct {
	ref        string
	total      int64
	done       atomic.Int64
	lastChange atomic.Int64 // unix nanos of the last byte received
}

func (p *pullState) add(n int) {
	if n > 0 {
		p.done.Add(int64(n))
		p.lastChange.Store(time.Now().UnixNano())
	}
}

func (s *Service) pull(ctx context.Context, normalized string, auth authn.Authenticator) (metadata.Image, error) {
	start := time.Now()
	ref, err := name.ParseReference(normalized)
	if err != nil {
		return metadata.Image{}, fmt.Errorf("image %q: %w: %w", normalized, errdefs.ErrInvalidArgument, err)
	}
	log := s.log.With("image", normalized)
	log.Info("pull started")

	st := &pullState{ref: normalized}
	st.lastChange.Store(time.Now().UnixNano())
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := s.watch(ctx, cancel, st, log)
	defer stopWatch()

	desc, endpoint, err := s.resolve(ctx, ref, auth, log)
	if err != nil {
		return metadata.Image{}, s.cause(ctx, err)
	}
	img, err := desc.Image()
	if err != nil {
		return metadata.Image{}, s.cause(ctx, fmt.Errorf("pull %s: %w", normalized, classify(err)))
	}
	rec, err := s.fetch(ctx, ref, desc, img, st, log)
	if err != nil {
		// What arrived before the failure (the manifest, the config, some
		// layers and their snapshots) no image names: collected now, not
		// at the next removal. A pull in progress holds its own.
		if gerr := s.GC(context.WithoutCancel(ctx)); gerr != nil {
			log.Warn("gc after a failed pull", "error", gerr)
		}
		return metadata.Image{}, s.cause(ctx, fmt.Errorf("pull %s from %s: %w", normalized, endpoint, err))
	}
	elapsed := time.Since(start)
	log.Info("pull done", "id", rec.ID, "from", endpoint, "bytes", st.done.Load(), "size", rec.Size,
		"seconds", elapsed.Seconds(), "MBps", float64(st.done.Load())/1e6/max(elapsed.Seconds(), 1e-3))
	return rec, nil
}

// cause prefers the reason the pull was cancelled (a stall) over the error
// it produced on the way out.
func (s *Service) cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// watch logs progress at intervals and cancels the pull once no byte has
// arrived for the configured timeout.
func (s *Service) watch(ctx context.Context, cancel context.CancelCauseFunc, st *pullState, log *slog.Logger) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(min(progressInterval, max(s.progressTimeout/4, 100*time.Millisecond)))
		defer t.Stop()
		lastLog := time.Now()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				// A pull waiting on a layer another pull downloads sees no
				// bytes of its own; any byte the store receives counts.
				idle := now.Sub(time.Unix(0, max(st.lastChange.Load(), s.lastByte.Load())))
				if s.progressTimeout > 0 && idle > s.progressTimeout {
					cancel(fmt.Errorf("pull %s: no data received for %s (the [image] pull_progress_timeout): %w",
						st.ref, idle.Round(time.Second), context.DeadlineExceeded))
					return
				}
				if now.Sub(lastLog) >= progressInterval {
					lastLog = now
					log.Info("pull progress", "bytes", st.done.Load(), "total", st.total)
				}
			}
		}
	}()
	return func() { close(done) }
}

// resolve finds the manifest (or index) for ref, trying the configured
// mirrors first and then the registry itself.
func (s *Service) resolve(ctx context.Context, ref name.Reference, auth authn.Authenticator, log *slog.Logger) (*remote.Descriptor, string, error) {
	host := ref.Context().RegistryStr()
	if host == name.DefaultRegistry {
		// go-containerregistry says index.docker.io; containerd's hosts
		// layout and every user say docker.io.
		host = "docker.io"
	}
	endpoints, err := s.hosts.Endpoints(host)
	if err != nil {
		return nil, "", err
	}
	// Asking what a tag points to needs "resolve"; a digest is content and
	// any mirror that may serve content ("pull") can answer it.
	need := registry.CapabilityResolve
	if _, ok := ref.(name.Digest); ok {
		need = registry.CapabilityPull
	}
	var errs []error
	for _, ep := range endpoints {
		if !ep.Has(need) {
			continue
		}
		if ep.PathPrefix != "" {
			log.Warn("skipping endpoint with a path prefix: not supported", "endpoint", ep.Host, "path", ep.PathPrefix)
			continue
		}
		eref, err := onEndpoint(ref, ep)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rt := ep.Transport
		if len(ep.Header) > 0 {
			rt = headerTransport{rt, ep.Header}
		}
		desc, err := remote.Get(eref, s.remoteOptions(ctx, auth, rt)...)
		if err == nil {
			return desc, ep.Host, nil
		}
		log.Warn("endpoint failed", "endpoint", ep.Host, "error", err)
		errs = append(errs, fmt.Errorf("%s: %w", ep.Host, classify(err)))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("pull %s: no endpoint of %s may pull: %w", ref, host, errdefs.ErrFailedPrecondition)
	}
	// The last endpoint is the registry itself: its answer is the one that
	// says most about the image (not found, unauthorized).
	return nil, "", fmt.Errorf("pull %s: %w", ref, errs[len(errs)-1])
}

// headerTransport adds the headers a hosts.toml sets for an endpoint.
type headerTransport struct {
	rt     http.RoundTripper
	header http.Header
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h.header {
		r.Header[k] = append(r.Header[k], v...)
	}
	return h.rt.RoundTrip(r)
}

// onEndpoint rewrites ref to be fetched from ep, keeping repository path and
// tag or digest.
func onEndpoint(ref name.Reference, ep registry.Endpoint) (name.Reference, error) {
	var opts []name.Option
	if ep.Insecure {
		opts = append(opts, name.Insecure)
	}
	repo := ep.Host + "/" + ref.Context().RepositoryStr()
	switch r := ref.(type) {
	case name.Digest:
		return name.NewDigest(repo+"@"+r.DigestStr(), opts...)
	case name.Tag:
		return name.NewTag(repo+":"+r.TagStr(), opts...)
	}
	return nil, fmt.Errorf("reference %s: %w", ref, errdefs.ErrInvalidArgument)
}

func (s *Service) remoteOptions(ctx context.Context, auth authn.Authenticator, rt http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(rt),
		remote.WithPlatform(s.platform),
		remote.WithUserAgent("corral"),
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 4}),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
			http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
	}
}

// classify gives registry errors the errdefs kind the CRI edge maps to a
// code, keeping the registry's own words.
func classify(err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w: %w (check the pull credentials)", errdefs.ErrUnauthenticated, err)
		case http.StatusForbidden:
			return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
			}
		}
	}
	if strings.Contains(err.Error(), "no child with platform") {
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	return err
}

// fetch stores the image's blobs and unpacks its layers, downloading only
// what is missing, and records the image.
func (s *Service) fetch(ctx context.Context, ref name.Reference, desc *remote.Descriptor, img v1.Image, st *pullState, log *slog.Logger) (metadata.Image, error) {
	manifestDigest, err := img.Digest()
	if err != nil {
		return metadata.Image{}, err
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return metadata.Image{}, err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return metadata.Image{}, err
	}
	configDigest, err := img.ConfigName()
	if err != nil {
		return metadata.Image{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return metadata.Image{}, fmt.Errorf("image config: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return metadata.Image{}, err
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return metadata.Image{}, fmt.Errorf("manifest has %d layers, config %d diff IDs: %w", len(layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}

	// Everything this pull makes is in use until its record exists.
	type layerInfo struct {
		blob, diffID, chainID, mediaType string
		size                             int64
		open                             func() (io.ReadCloser, error)
	}
	infos := make([]layerInfo, len(layers))
	var parent digest.Digest
	var total int64
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return metadata.Image{}, err
		}
		size, err := l.Size()
		if err != nil {
			return metadata.Image{}, err
		}
		mt, err := l.MediaType()
		if err != nil {
			return metadata.Image{}, err
		}
		diffID := digest.Digest(cfg.RootFS.DiffIDs[i].String())
		chain := snapshot.ChainID(parent, diffID)
		parent = chain
		infos[i] = layerInfo{blob: d.String(), diffID: diffID.String(), chainID: chain.String(), mediaType: string(mt), size: size, open: l.Compressed}
		total += size
	}
	st.total = total
	keep := []string{manifestDigest.String(), configDigest.String(), desc.Digest.String()}
	for _, in := range infos {
		keep = append(keep, in.blob, in.chainID)
	}
	release := s.hold(keep)
	defer release()

	if err := s.content.writeBytes(manifestDigest.String(), rawManifest); err != nil {
		return metadata.Image{}, err
	}
	if desc.Digest != manifestDigest {
		if err := s.content.writeBytes(desc.Digest.String(), desc.Manifest); err != nil {
			return metadata.Image{}, err
		}
	}
	if err := s.content.writeBytes(configDigest.String(), rawConfig); err != nil {
		return metadata.Image{}, err
	}

	// Download what is missing, a few layers at a time, and unpack each in
	// order as soon as it and its parent are there.
	ready := make([]chan error, len(infos))
	sem := make(chan struct{}, downloadConcurrency)
	var wg sync.WaitGroup
	dctx, dcancel := context.WithCancel(ctx)
	defer func() { dcancel(); wg.Wait() }()
	for i, in := range infos {
		ready[i] = make(chan error, 1)
		if _, err := s.snaps.Stat(digest.Digest(in.chainID)); err == nil || s.content.has(in.blob) {
			ready[i] <- nil
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-dctx.Done():
				ready[i] <- dctx.Err()
				return
			}
			defer func() { <-sem }()
			ready[i] <- s.download(dctx, in.blob, in.size, in.open, st, log)
		}()
	}
	parent = ""
	var chainIDs []string
	for i, in := range infos {
		select {
		case err := <-ready[i]:
			if err != nil {
				return metadata.Image{}, err
			}
		case <-ctx.Done():
			return metadata.Image{}, ctx.Err()
		}
		blob := in.blob
		info, err := s.snaps.Unpack(ctx, parent, snapshot.Layer{
			DiffID:    digest.Digest(in.diffID),
			MediaType: in.mediaType,
			Digest:    digest.Digest(blob),
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				if !s.content.has(blob) {
					// The snapshot was there when the pull began but went
					// since; fetch the blob after all.
					if err := s.download(ctx, blob, in.size, in.open, st, log); err != nil {
						return nil, err
					}
				}
				return s.content.open(blob)
			},
		})
		if err != nil {
			return metadata.Image{}, fmt.Errorf("layer %d (%s): %w", i, blob, err)
		}
		parent = info.ChainID
		chainIDs = append(chainIDs, info.ChainID.String())
	}

	size := int64(len(rawManifest)) + int64(len(rawConfig)) + total
	blobs := make([]string, 0, len(infos))
	for _, in := range infos {
		blobs = append(blobs, in.blob)
	}
	rec := metadata.Image{
		ID:             configDigest.String(),
		ManifestDigest: manifestDigest.String(),
		Size:           size,
		Config:         rawConfig,
		ChainIDs:       chainIDs,
		CreatedAt:      time.Now(),
		Extra:          map[string]string{extraLayers: strings.Join(blobs, ",")},
	}
	repo := ref.Context().Name()
	if repo == name.DefaultRegistry+"/"+ref.Context().RepositoryStr() {
		repo = "docker.io/" + ref.Context().RepositoryStr()
	}
	rec.RepoDigests = []string{repo + "@" + desc.Digest.String()}
	if t, ok := ref.(name.Tag); ok {
		rec.RepoTags = []string{repo + ":" + t.TagStr()}
	}
	if desc.Digest != manifestDigest {
		rec.Extra[extraIndex] = desc.Digest.String()
	}
	// Recorded while the hold stands: a collection between the two would
	// take what the record is about to name.
	return s.record(ref, rec)
}

// extra keys of an image record.
const (
	extraLayers = "layers" // comma-separated layer blob digests
	extraIndex  = "index"  // the index digest a multi-platform tag resolved through
)

// download fetches one blob into the content store, shared with any other
// pull that needs the same blob at the same time.
func (s *Service) download(ctx context.Context, blob string, size int64, open func() (io.ReadCloser, error), st *pullState, log *slog.Logger) error {
	_, err := s.blobs.do(ctx, blob, func(ctx context.Context) (struct{}, error) {
		if s.content.has(blob) {
			return struct{}{}, nil
		}
		start := time.Now()
		rc, err := open()
		if err != nil {
			return struct{}{}, classify(err)
		}
		defer rc.Close()
		if err := s.content.write(ctx, blob, size, progressReader{rc, st, &s.lastByte, s.metrics}); err != nil {
			return struct{}{}, err
		}
		log.Debug("layer downloaded", "blob", blob, "bytes", size, "seconds", time.Since(start).Seconds())
		return struct{}{}, nil
	})
	return err
}

type progressReader struct {
	r       io.Reader
	st      *pullState
	last    *atomic.Int64
	metrics *metrics.Metrics
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.st.add(n)
	if n > 0 {
		p.last.Store(time.Now().UnixNano())
		p.metrics.AddPullBytes(n)
	}
	return n, err
}

// nodePlatform is what this node runs.
func nodePlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}
	if goruntime.GOARCH == "arm64" {
		p.Variant = "v8"
	}
	return p
}
