package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/corral-runtime/corral/cri/image"
	"github.com/corral-runtime/corral/metadata"
	imagesapi "github.com/corral-runtime/corral/proto/images/v1"
)

// exportChunk is how much of an archive one ExportChunk carries: well
// under ttrpc's 4 MiB message limit.
const exportChunk = 1 << 20

// imagesService is corral.images.v1.Images: image import and export for
// corralctl, through the same image store the CRI calls use.
type imagesService struct {
	s *Server
}

var _ imagesapi.ImagesService = (*imagesService)(nil)

// registerImages adds the images service to corrald's admin ttrpc server.
func (s *Server) registerImages(srv *ttrpc.Server) {
	imagesapi.RegisterImagesService(srv, &imagesService{s: s})
}

// Import implements corral.images.v1.Images.
func (is *imagesService) Import(ctx context.Context, stream imagesapi.Images_ImportServer) (*imagesapi.ImportResponse, error) {
	if is.s.images == nil {
		return nil, errgrpc.ToGRPC(errNoImages)
	}
	// The chunks feed the importer through a pipe, so the archive is never
	// whole in memory.
	pr, pw := io.Pipe()
	received := make(chan struct{})
	go func() {
		defer close(received)
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				pw.Close()
				break
			}
			if err != nil {
				pw.CloseWithError(fmt.Errorf("receive the archive: %w", err))
				return
			}
			if _, err := pw.Write(chunk.GetData()); err != nil {
				break // the importer stopped reading: drain what remains
			}
		}
		// Whatever follows the tar's end (padding, or what an importer
		// that failed left unread) is read off, so the client finishes
		// sending and gets the answer.
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	recs, err := is.s.images.Import(ctx, pr)
	pr.CloseWithError(errImportDone)
	if err != nil {
		<-received
		is.s.log.Warn("image import failed", "error", err)
		return nil, errgrpc.ToGRPC(err)
	}
	<-received
	resp := &imagesapi.ImportResponse{}
	for _, r := range recs {
		resp.Images = append(resp.Images, apiImage(r))
	}
	return resp, nil
}

// errImportDone ends the pipe's writer once the importer has its answer.
var errImportDone = errors.New("import finished")

// Export implements corral.images.v1.Images.
func (is *imagesService) Export(ctx context.Context, r *imagesapi.ExportRequest, stream imagesapi.Images_ExportServer) error {
	if is.s.images == nil {
		return errgrpc.ToGRPC(errNoImages)
	}
	format := image.FormatOCI
	if r.GetFormat() != "" {
		f, err := image.ParseArchiveFormat(r.GetFormat())
		if err != nil {
			return errgrpc.ToGRPC(err)
		}
		format = f
	}
	if len(r.GetRefs()) == 0 {
		return errgrpc.ToGRPC(fmt.Errorf("export: name at least one image: %w", errdefs.ErrInvalidArgument))
	}
	w := &chunkWriter{stream: stream}
	if err := is.s.images.Export(ctx, w, r.GetRefs(), format); err != nil {
		return errgrpc.ToGRPC(err)
	}
	return errgrpc.ToGRPC(w.flush())
}

// chunkWriter cuts what Export writes into ExportChunks.
type chunkWriter struct {
	stream imagesapi.Images_ExportServer
	buf    []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(len(p), exportChunk-len(w.buf))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == exportChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.stream.Send(&imagesapi.ExportChunk{Data: w.buf})
	w.buf = make([]byte, 0, exportChunk)
	return err
}

func apiImage(r metadata.Image) *imagesapi.Image {
	return &imagesapi.Image{
		Id: r.ID, RepoTags: r.RepoTags, RepoDigests: r.RepoDigests,
		ManifestDigest: r.ManifestDigest, Size: r.Size,
	}
}
