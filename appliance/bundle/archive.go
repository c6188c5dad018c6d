package bundle

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// epoch is the modification time of every member Outpost writes unless a
// build time is given: the same input gives the same bytes.
var epoch = time.Unix(0, 0).UTC()

// ociProbeGuard is the first member of every image archive Outpost
// writes: a symlink pointing outside the archive. Podman's load tries an
// archive as an OCI archive before a docker-archive, and that probe
// unpacks the whole file into a temporary directory before finding no
// index.json — a full extra copy of every image. The guard makes the
// probe's unpacking stop at the first member (it refuses links leaving
// the directory); the docker-archive reader, which only opens the members
// manifest.json names, never looks at it. Measured: 10-15% off Podman's
// load time (docs/bundles.md).
const ociProbeGuard = "outpost-not-an-oci-archive"

// writeImageArchive writes img to w as a canonical docker-archive: the
// ociProbeGuard link, "<config hex>.json", then each distinct layer
// uncompressed as "<diff id hex>.tar" in order, then manifest.json last
// (so a stream cut anywhere before its end cannot be loaded), every
// member with fixed metadata. Layer bytes are checked against the
// config's diff IDs while copied; compressed layers are decompressed into
// tmpDir first, since a tar header needs the size before the content. It
// returns the image's description (without Entry).
func writeImageArchive(w io.Writer, img *srcImage, refs []string, platformWant, tmpDir string) (Image, error) {
	c, err := parseConfig(img.config)
	if err != nil {
		return Image{}, err
	}
	desc := Image{
		ID:       img.id,
		Refs:     refs,
		Platform: platformOf(c.OS, c.Architecture, c.Variant),
		Created:  c.Created,
		Labels:   c.Config.Labels,
	}
	if platformWant != "" && desc.Platform != platformWant && platformOf(c.OS, c.Architecture, "") != platformWant {
		return Image{}, fmt.Errorf("image %s (%s) is for %s, not %s", strings.Join(refs, ", "), img.where, desc.Platform, platformWant)
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: ociProbeGuard, Linkname: "../" + ociProbeGuard, Mode: 0o777, ModTime: epoch}); err != nil {
		return Image{}, err
	}
	hexID := strings.TrimPrefix(img.id, "sha256:")
	if err := writeMember(tw, hexID+".json", int64(len(img.config)), strings.NewReader(string(img.config))); err != nil {
		return Image{}, err
	}
	written := map[string]bool{}
	var layerNames []string
	for i, l := range img.layers {
		hexDiff, ok := strings.CutPrefix(l.diffID, "sha256:")
		if !ok || !hexRe.MatchString(hexDiff) {
			return Image{}, fmt.Errorf("layer %d of %s: unsupported diff ID %q", i, img.where, l.diffID)
		}
		name := hexDiff + ".tar"
		layerNames = append(layerNames, name)
		size, err := func() (int64, error) {
			if written[name] {
				// Same layer twice (possible, rare): stored once.
				for _, ll := range desc.Layers {
					if ll.DiffID == l.diffID {
						return ll.Size, nil
					}
				}
			}
			written[name] = true
			return writeLayer(tw, img, l, name, tmpDir)
		}()
		if err != nil {
			return Image{}, fmt.Errorf("copying layer %d (%s) of %s: %w", i, l.diffID, img.where, err)
		}
		desc.Layers = append(desc.Layers, Layer{DiffID: l.diffID, Size: size})
		desc.UnpackedSize += size
	}
	man, err := json.Marshal([]struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{Config: hexID + ".json", RepoTags: refs, Layers: layerNames}})
	if err != nil {
		return Image{}, err
	}
	man = append(man, '\n')
	if err := writeMember(tw, "manifest.json", int64(len(man)), strings.NewReader(string(man))); err != nil {
		return Image{}, err
	}
	if err := tw.Close(); err != nil {
		return Image{}, err
	}
	return desc, nil
}

// writeLayer copies one layer, uncompressed, checking its diff ID.
func writeLayer(tw *tar.Writer, img *srcImage, l srcLayer, name, tmpDir string) (int64, error) {
	rc, size, err := img.fs.open(l.name)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	head, _ := br.Peek(4)
	var src io.Reader = br
	if isCompressed(head) {
		spool, n, err := decompressToTemp(br, head, tmpDir)
		if err != nil {
			return 0, err
		}
		defer os.Remove(spool.Name())
		defer spool.Close()
		src, size = bufio.NewReaderSize(spool, 1<<20), n
	}
	h := sha256.New()
	if err := writeMember(tw, name, size, io.TeeReader(src, h)); err != nil {
		return 0, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != l.diffID {
		return 0, fmt.Errorf("uncompressed layer has digest %s, the image config says %s: the source is damaged", got, l.diffID)
	}
	return size, nil
}

// decompressToTemp decompresses a gzip or zstd layer into a temporary
// file and returns it rewound, with its size.
func decompressToTemp(r io.Reader, head []byte, tmpDir string) (*os.File, int64, error) {
	var dr io.Reader
	if strings.HasPrefix(string(head), string(gzipMagic)) {
		gz, err := gzip.NewReader(r)
		if err != nil {
			return nil, 0, fmt.Errorf("decompressing gzip layer: %w", err)
		}
		defer gz.Close()
		dr = gz
	} else {
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, 0, fmt.Errorf("decompressing zstd layer: %w", err)
		}
		defer zr.Close()
		dr = zr
	}
	f, err := os.CreateTemp(tmpDir, "layer-*.tar")
	if err != nil {
		return nil, 0, err
	}
	n, err := io.Copy(f, dr)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, fmt.Errorf("decompressing layer: %w", err)
	}
	return f, n, nil
}

// writeMember writes one regular file with fixed metadata.
func writeMember(tw *tar.Writer, name string, size int64, r io.Reader) error {
	if err := tw.WriteHeader(memberHeader(name, size, 0o644, epoch)); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	n, err := io.Copy(tw, r)
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("writing %s: %d bytes, expected %d (did the source change?)", name, n, size)
	}
	return nil
}

// memberHeader is the header of every file Outpost writes into a tar:
// only name, size, mode and time vary.
func memberHeader(name string, size int64, mode int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     mode,
		ModTime:  mtime,
	}
}
