package demo

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultImage is the tag of the demo image; embed/demo/compose.yml uses it.
const DefaultImage = "localhost/outpost-demo:latest"

// LabelBuild is the image label carrying "sha256:<hex>" of the binary the
// image was built from; EnsureImage rebuilds when it differs.
const LabelBuild = "io.outpost.demo.build"

// Image layout and user.
const (
	// ImageBinary is where the binary sits inside the image.
	ImageBinary = "/outpost"
	// AppUID and AppGID are the non-root user ("app") the image runs as.
	AppUID = 1000
	AppGID = 1000
)

// imageSource is the org.opencontainers.image.source label.
const imageSource = "https://github.com/outpostdev/outpost"

// ImageOptions tune BuildImage. The zero value is valid.
type ImageOptions struct {
	// Version is the org.opencontainers.image.version label. Default "dev".
	Version string
	// Created is the image's creation time, its created label, and the
	// mtime of every file in the layer. Default the Unix epoch, so the same
	// binary always yields the same image ID.
	Created time.Time
	// Architecture is the image's GOARCH-style architecture. Default
	// runtime.GOARCH (the binary is assumed to be built for it).
	Architecture string
	// BuildID is the LabelBuild value. Default "sha256:<hex>" of the
	// binary, computed by reading it.
	BuildID string
	// Labels are added to (and override) the default labels.
	Labels map[string]string
}

// BuildImage assembles the demo image, FROM scratch, with one layer:
// /outpost (the binary, 0755), /etc/passwd and /etc/group (root and app
// 1000:1000), /tmp (1777) and /data (0755, owned by app so a fresh named
// volume mounted there copies up that ownership). The entrypoint is
// ["/outpost","demo-role"], the default command ["sleep"], the user
// 1000:1000. Its HEALTHCHECK tests DefaultReadyFile, which every
// long-running role touches when ready; compose healthchecks refine it
// per service.
//
// binary is read, not copied: it must stay unchanged and readable until
// the image has been written. The layer is deterministic (sorted entries,
// fixed mtimes, no user names) and uncompressed, as `docker save` writes
// it, so writing the archive costs no compression.
func BuildImage(binary io.ReaderAt, size int64, opts ImageOptions) (v1.Image, error) {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Created.IsZero() {
		opts.Created = time.Unix(0, 0)
	}
	opts.Created = opts.Created.UTC().Truncate(time.Second)
	if opts.Architecture == "" {
		opts.Architecture = runtime.GOARCH
	}
	if opts.BuildID == "" {
		d, err := digestReader(io.NewSectionReader(binary, 0, size))
		if err != nil {
			return nil, fmt.Errorf("hashing binary: %w", err)
		}
		opts.BuildID = d
	}

	layer, err := newBinaryLayer(binary, size, opts.Created)
	if err != nil {
		return nil, fmt.Errorf("building demo image layer: %w", err)
	}

	labels := map[string]string{
		"org.opencontainers.image.title":       "outpost-demo",
		"org.opencontainers.image.description": "Outpost demo appliance: Outpost's own static binary running a demo role",
		"org.opencontainers.image.version":     opts.Version,
		"org.opencontainers.image.source":      imageSource,
		"org.opencontainers.image.created":     opts.Created.Format(time.RFC3339),
		LabelBuild:                             opts.BuildID,
	}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	cfg := &v1.ConfigFile{
		Architecture: opts.Architecture,
		OS:           "linux",
		Created:      v1.Time{Time: opts.Created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{ImageBinary, "demo-role"},
			Cmd:        []string{"sleep"},
			User:       fmt.Sprintf("%d:%d", AppUID, AppGID),
			WorkingDir: "/",
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Labels:     labels,
			StopSignal: "SIGTERM",
			Healthcheck: &v1.HealthConfig{
				Test:        []string{"CMD", ImageBinary, "demo-role", "probe", "--file", DefaultReadyFile},
				Interval:    10 * time.Second,
				Timeout:     5 * time.Second,
				StartPeriod: 30 * time.Second,
				Retries:     3,
			},
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting demo image config: %w", err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: opts.Created},
			CreatedBy: "outpost: demo image builder (binary at " + ImageBinary + ")",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("adding demo image layer: %w", err)
	}
	return img, nil
}

// WriteArchive writes img as a docker-archive tarball tagged tag, the
// format `podman load` and engine.Engine.LoadImage read.
func WriteArchive(w io.Writer, img v1.Image, tag string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("parsing image tag %q: %w", tag, err)
	}
	if err := tarball.Write(ref, img, w); err != nil {
		return fmt.Errorf("writing image archive %s: %w", tag, err)
	}
	return nil
}

// digestReader returns "sha256:<hex>" of r's content.
func digestReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// binaryLayer is an uncompressed layer generated on the fly from the
// binary: its digest and diff ID are the same hash, computed once.
type binaryLayer struct {
	bin     io.ReaderAt
	binSize int64
	mtime   time.Time
	hash    v1.Hash
	size    int64
}

var _ v1.Layer = (*binaryLayer)(nil)

func newBinaryLayer(bin io.ReaderAt, size int64, mtime time.Time) (*binaryLayer, error) {
	l := &binaryLayer{bin: bin, binSize: size, mtime: mtime}
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if l.hash, l.size, err = v1.SHA256(rc); err != nil {
		return nil, err
	}
	return l, nil
}

// Digest implements v1.Layer.
func (l *binaryLayer) Digest() (v1.Hash, error) { return l.hash, nil }

// DiffID implements v1.Layer.
func (l *binaryLayer) DiffID() (v1.Hash, error) { return l.hash, nil }

// Compressed implements v1.Layer; the layer is stored uncompressed.
func (l *binaryLayer) Compressed() (io.ReadCloser, error) { return l.Uncompressed() }

// Size implements v1.Layer.
func (l *binaryLayer) Size() (int64, error) { return l.size, nil }

// MediaType implements v1.Layer.
func (l *binaryLayer) MediaType() (types.MediaType, error) {
	return types.DockerUncompressedLayer, nil
}

// Uncompressed implements v1.Layer: a tar stream written by a goroutine
// that stops when the reader is closed.
func (l *binaryLayer) Uncompressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.writeTar(pw)) }()
	return pr, nil
}

const (
	passwdFile = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"app:x:1000:1000:app:/data:/sbin/nologin\n"
	groupFile = "root:x:0:\n" +
		"app:x:1000:\n"
)

// writeTar writes the layer's entries in sorted order.
func (l *binaryLayer) writeTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	dir := func(name string, mode int64, uid, gid int) error {
		return tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeDir, Name: name, Mode: mode,
			Uid: uid, Gid: gid, ModTime: l.mtime, Format: tar.FormatUSTAR,
		})
	}
	file := func(name string, mode int64, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size,
			ModTime: l.mtime, Format: tar.FormatUSTAR,
		}); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	steps := []func() error{
		func() error { return dir("data/", 0o755, AppUID, AppGID) },
		func() error { return dir("etc/", 0o755, 0, 0) },
		func() error { return file("etc/group", 0o644, int64(len(groupFile)), strings.NewReader(groupFile)) },
		func() error { return file("etc/passwd", 0o644, int64(len(passwdFile)), strings.NewReader(passwdFile)) },
		func() error {
			return file(ImageBinary[1:], 0o755, l.binSize, io.NewSectionReader(l.bin, 0, l.binSize))
		},
		func() error { return dir("tmp/", 0o1777, 0, 0) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("writing layer tar: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing layer tar: %w", err)
	}
	return nil
}
