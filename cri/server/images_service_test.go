package server

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"github.com/corral-runtime/corral/cri/image"
	imagesapi "github.com/corral-runtime/corral/proto/images/v1"
)

// imagesClient serves a Server's images service on a unix socket of its own
// and returns a client of it.
func imagesClient(t *testing.T) (imagesapi.ImagesClient, *Server) {
	t.Helper()
	dir := t.TempDir()
	st := testStore(t)
	imgs, err := image.New(image.Options{Root: dir, Store: st, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(testConfig(t), st, Options{Images: imgs, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	tsrv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.registerImages(tsrv)
	sockDir, err := os.MkdirTemp("", "is")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	l, err := net.Listen("unix", filepath.Join(sockDir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	go tsrv.Serve(context.Background(), l)
	t.Cleanup(func() { tsrv.Close() })
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return imagesapi.NewImagesClient(c), srv
}

// tinyDockerArchive is a docker-archive of a one-layer image tagged tag,
// whose layer holds a file of size bytes.
func tinyDockerArchive(t *testing.T, tag string, size int) []byte {
	t.Helper()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	lw.WriteHeader(&tar.Header{Name: "data", Size: int64(size), Mode: 0o644, Typeflag: tar.TypeReg})
	lw.Write(bytes.Repeat([]byte("x"), size))
	lw.Close()
	sum := sha256.Sum256(layer.Bytes())
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	config, _ := json.Marshal(map[string]any{
		"architecture": goruntime.GOARCH, "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{tag}, "Layers": []string{"layer.tar"}}})
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{"manifest.json", manifest}, {"config.json", config}, {"layer.tar", layer.Bytes()}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Size: int64(len(f.data)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(f.data)
	}
	tw.Close()
	return out.Bytes()
}

func importArchive(ctx context.Context, c imagesapi.ImagesClient, data []byte, chunk int) (*imagesapi.ImportResponse, error) {
	stream, err := c.Import(ctx)
	if err != nil {
		return nil, err
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		if err := stream.Send(&imagesapi.ImportChunk{Data: data[:n]}); err != nil {
			break // the answer says why
		}
		data = data[n:]
	}
	return stream.CloseAndRecv()
}

func exportArchive(ctx context.Context, c imagesapi.ImagesClient, req *imagesapi.ExportRequest) ([]byte, error) {
	stream, err := c.Export(ctx, req)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		out.Write(chunk.GetData())
	}
}

func TestImagesServiceImportExport(t *testing.T) {
	c, srv := imagesClient(t)
	ctx := context.Background()
	// 3 MiB of layer in 64 KiB chunks: many messages, and an archive that
	// never sits whole in one.
	data := tinyDockerArchive(t, "example.com/offline/app:1", 3<<20)
	resp, err := importArchive(ctx, c, data, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Images) != 1 || len(resp.Images[0].RepoTags) != 1 || resp.Images[0].RepoTags[0] != "example.com/offline/app:1" {
		t.Fatalf("Import answered %v", resp.Images)
	}
	rec, err := srv.images.Get("example.com/offline/app:1")
	if err != nil || rec.ID != resp.Images[0].Id {
		t.Fatalf("the store has %v, %v", rec.ID, err)
	}

	for _, format := range []string{"", "oci-archive", "docker-archive"} {
		out, err := exportArchive(ctx, c, &imagesapi.ExportRequest{Refs: []string{"example.com/offline/app:1"}, Format: format})
		if err != nil {
			t.Fatalf("Export %q: %v", format, err)
		}
		if len(out) < 3<<20 {
			t.Fatalf("Export %q: %d bytes", format, len(out))
		}
		// What came out goes back in as the same image.
		again, err := importArchive(ctx, c, out, 1<<20)
		if err != nil || len(again.Images) != 1 || again.Images[0].Id != rec.ID {
			t.Fatalf("re-import of the %q export: %v %v", format, again, err)
		}
	}

	// Errors keep their kind across ttrpc.
	if _, err := importArchive(ctx, c, bytes.Repeat([]byte("junk"), 100000), 64<<10); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Errorf("import of junk: %v, want InvalidArgument", err)
	}
	if _, err := exportArchive(ctx, c, &imagesapi.ExportRequest{Refs: []string{"nope:1"}}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("export of an unknown image: %v, want NotFound", err)
	}
	if _, err := exportArchive(ctx, c, &imagesapi.ExportRequest{Refs: []string{"example.com/offline/app:1"}, Format: "zip"}); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Errorf("export as zip: %v, want InvalidArgument", err)
	}
	if _, err := exportArchive(ctx, c, &imagesapi.ExportRequest{}); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Errorf("export of nothing: %v, want InvalidArgument", err)
	}
	// The service still works after the failures.
	if _, err := importArchive(ctx, c, data, 1<<20); err != nil {
		t.Errorf("import after the failures: %v", err)
	}
}
