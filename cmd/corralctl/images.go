package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	imagesapi "github.com/corral-runtime/corral/proto/images/v1"
)

// importChunk is how much of an archive one ImportChunk carries.
const importChunk = 1 << 20

// dialImages connects to corrald's image service, which shares the debug
// socket.
func (e *env) dialImages() (imagesapi.ImagesClient, func(), error) {
	path := filepath.Join(e.state, debugSocket)
	conn, err := net.DialTimeout("unix", path, e.timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("corrald's image service at %s: %w (is corrald running with --state %s?)", path, err, e.state)
	}
	client := ttrpc.NewClient(conn)
	return imagesapi.NewImagesClient(client), func() { client.Close() }, nil
}

// transferContext is the context of an import or export: as long as the
// archive takes, until SIGINT or SIGTERM, not --timeout.
func transferContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func runImagesImport(e *env, args []string) error {
	rest, err := parse(e.subFlags("images import"), args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageError{"images import takes one FILE, or - for standard input"}
	}
	var in io.Reader = os.Stdin
	if rest[0] != "-" {
		f, err := os.Open(rest[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	client, closeClient, err := e.dialImages()
	if err != nil {
		return err
	}
	defer closeClient()
	ctx, cancel := transferContext()
	defer cancel()
	stream, err := client.Import(ctx)
	if err != nil {
		return errgrpc.ToNative(err)
	}
	buf := make([]byte, importChunk)
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if err := stream.Send(&imagesapi.ImportChunk{Data: buf[:n]}); err != nil {
				// corrald stopped reading: its answer says why.
				break
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read %s: %w", rest[0], rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("import %s: %w", rest[0], errgrpc.ToNative(err))
	}
	if e.output == "json" {
		return e.writeJSON(resp.Images)
	}
	t := e.table("IMAGE ID", "TAGS", "SIZE")
	for _, img := range resp.Images {
		t.row(strings.TrimPrefix(img.Id, "sha256:")[:12], strings.Join(img.RepoTags, ","), humanSize(img.Size))
	}
	return t.flush()
}

func runImagesExport(e *env, args []string) error {
	fs := e.subFlags("images export")
	format := fs.String("format", "oci-archive", "archive `FORMAT`: oci-archive (an OCI layout in a tar) or docker-archive (docker save's)")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) < 2 {
		return usageError{"images export takes REF... FILE (- for standard output)"}
	}
	switch *format {
	case "oci-archive", "docker-archive", "oci", "docker":
	default:
		return usageError{fmt.Sprintf("images export --format %q: use oci-archive or docker-archive", *format)}
	}
	refs, file := rest[:len(rest)-1], rest[len(rest)-1]
	client, closeClient, err := e.dialImages()
	if err != nil {
		return err
	}
	defer closeClient()
	ctx, cancel := transferContext()
	defer cancel()
	stream, err := client.Export(ctx, &imagesapi.ExportRequest{Refs: refs, Format: *format})
	if err != nil {
		return errgrpc.ToNative(err)
	}
	// A file is written beside its final name and renamed once complete,
	// so a failed export leaves no truncated archive behind.
	var out io.Writer = e.stdout
	var tmp *os.File
	if file != "-" {
		tmp, err = os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".")
		if err != nil {
			return err
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		out = tmp
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("export: %w", errgrpc.ToNative(err))
		}
		if _, err := out.Write(chunk.GetData()); err != nil {
			return err
		}
	}
	if tmp == nil {
		return nil
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// humanSize prints bytes as crictl does: 1.2MB.
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}
