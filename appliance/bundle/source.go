package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// blobFS opens files of an image source by slash path: a directory (OCI
// layout) or an indexed tar file (docker-archive, oci-archive).
type blobFS interface {
	open(name string) (io.ReadCloser, int64, error)
}

// dirFS is an OCI layout directory.
type dirFS string

func (d dirFS) open(name string) (io.ReadCloser, int64, error) {
	if !validSourcePath(name) {
		return nil, 0, fmt.Errorf("invalid path %q in image source", name)
	}
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s in %s is not a regular file", name, d)
	}
	return f, st.Size(), nil
}

// validSourcePath reports whether name stays inside the source.
func validSourcePath(name string) bool {
	return name != "" && !strings.HasPrefix(name, "/") && path.Clean(name) == name && name != ".." && !strings.HasPrefix(name, "../")
}

// tarFS indexes a tar file once (headers only, seeking over content) and
// then reads members as sections of the file.
type tarFS struct {
	f     *os.File
	path  string
	files map[string]tarMember
}

type tarMember struct {
	offset, size int64
	link         string
}

// openTarFS indexes the tar file at p.
func openTarFS(p string) (*tarFS, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	t := &tarFS{f: f, path: p, files: map[string]tarMember{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("reading %s as a tar archive (image archives must be uncompressed tar files, as podman save writes them): %w", p, err)
		}
		name := strings.TrimPrefix(path.Clean(hdr.Name), "./")
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				f.Close()
				return nil, err
			}
			t.files[name] = tarMember{offset: off, size: hdr.Size}
		case tar.TypeSymlink, tar.TypeLink:
			// docker save links identical layers; resolve within the
			// archive only.
			target := hdr.Linkname
			if hdr.Typeflag == tar.TypeSymlink {
				target = path.Join(path.Dir(name), target)
			}
			t.files[name] = tarMember{link: strings.TrimPrefix(path.Clean(target), "./")}
		}
	}
	return t, nil
}

func (t *tarFS) open(name string) (io.ReadCloser, int64, error) {
	for i := 0; i < 8; i++ {
		m, ok := t.files[name]
		if !ok {
			return nil, 0, fmt.Errorf("%s has no member %q: %w", t.path, name, os.ErrNotExist)
		}
		if m.link == "" {
			return io.NopCloser(io.NewSectionReader(t.f, m.offset, m.size)), m.size, nil
		}
		name = m.link
	}
	return nil, 0, fmt.Errorf("%s: too many links resolving %q", t.path, name)
}

// Close releases the archive file.
func (t *tarFS) Close() error { return t.f.Close() }

// srcImage is an image found in a source, not yet copied.
type srcImage struct {
	fs     blobFS
	where  string
	config []byte
	id     string // sha256:<hex> of config
	layers []srcLayer
	names  []string // normalised names it carries in the source
	// repoDigests are registry digests known for it (podman storage).
	repoDigests []string
}

type srcLayer struct {
	name   string // path in fs
	diffID string
}

// imageConfig is the part of an image config Outpost reads.
type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	Created      string `json:"created,omitempty"`
	Config       struct {
		Labels map[string]string `json:"Labels"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

func parseConfig(data []byte) (*imageConfig, error) {
	var c imageConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("decoding image config: %w", err)
	}
	return &c, nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func readAllLimited(fs blobFS, name string, limit int64) ([]byte, error) {
	rc, size, err := fs.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d expected", name, size, limit)
	}
	return io.ReadAll(io.LimitReader(rc, limit))
}

// dockerArchiveImages lists the images of a docker-archive (podman save,
// docker save).
func dockerArchiveImages(fs blobFS, where string) ([]*srcImage, error) {
	data, err := readAllLimited(fs, "manifest.json", 16<<20)
	if err != nil {
		return nil, fmt.Errorf("%s: reading manifest.json: %w", where, err)
	}
	var descs []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(data, &descs); err != nil {
		return nil, fmt.Errorf("%s: decoding manifest.json: %w", where, err)
	}
	var out []*srcImage
	for _, d := range descs {
		cfg, err := readAllLimited(fs, d.Config, 16<<20)
		if err != nil {
			return nil, fmt.Errorf("%s: reading image config: %w", where, err)
		}
		c, err := parseConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if len(c.RootFS.DiffIDs) != len(d.Layers) {
			return nil, fmt.Errorf("%s: image config lists %d layers, manifest.json %d", where, len(c.RootFS.DiffIDs), len(d.Layers))
		}
		img := &srcImage{fs: fs, where: where, config: cfg, id: digestOf(cfg)}
		for i, l := range d.Layers {
			img.layers = append(img.layers, srcLayer{name: l, diffID: c.RootFS.DiffIDs[i]})
		}
		for _, t := range d.RepoTags {
			img.names = append(img.names, NormalizeRef(t))
		}
		out = append(out, img)
	}
	return out, nil
}

// OCI media types Outpost reads.
const (
	mtOCIIndex      = "application/vnd.oci.image.index.v1+json"
	mtOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	mtDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerV2      = "application/vnd.docker.distribution.manifest.v2+json"
	annotationRef   = "org.opencontainers.image.ref.name"
	annotationCtrd  = "io.containerd.image.name"
	maxJSONBlobSize = 16 << 20
)

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Variant      string `json:"variant,omitempty"`
	} `json:"platform,omitempty"`
}

func blobPath(digest string) (string, error) {
	algo, hexd, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" || !hexRe.MatchString(hexd) {
		return "", fmt.Errorf("unsupported digest %q", digest)
	}
	return "blobs/sha256/" + hexd, nil
}

// readBlob reads a JSON blob and checks its digest.
func readBlob(fs blobFS, digest string) ([]byte, error) {
	p, err := blobPath(digest)
	if err != nil {
		return nil, err
	}
	b, err := readAllLimited(fs, p, maxJSONBlobSize)
	if err != nil {
		return nil, err
	}
	if got := digestOf(b); got != digest {
		return nil, fmt.Errorf("blob %s has digest %s", digest, got)
	}
	return b, nil
}

// ociLayoutImages lists the images of an OCI layout (directory or
// oci-archive), choosing platform ("os/arch[/variant]") from indexes.
func ociLayoutImages(fs blobFS, where, platform string) ([]*srcImage, error) {
	data, err := readAllLimited(fs, "index.json", maxJSONBlobSize)
	if err != nil {
		return nil, fmt.Errorf("%s: reading index.json: %w", where, err)
	}
	var idx struct {
		Manifests []ociDescriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: decoding index.json: %w", where, err)
	}
	var out []*srcImage
	for _, d := range idx.Manifests {
		names := descriptorNames(d)
		img, err := ociImage(fs, where, d, platform, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if img == nil {
			continue
		}
		img.names = append(img.names, names...)
		out = append(out, img)
	}
	return out, nil
}

// descriptorNames are the full references an index entry is annotated
// with; a bare tag ("1.2.0") names no repository and is left out (map it
// with REF=PATH).
func descriptorNames(d ociDescriptor) []string {
	var names []string
	for _, k := range []string{annotationCtrd, annotationRef} {
		v := d.Annotations[k]
		if v != "" && strings.Contains(v, "/") && checkRef(NormalizeRef(v)) == nil {
			names = append(names, NormalizeRef(v))
		}
	}
	return names
}

func ociImage(fs blobFS, where string, d ociDescriptor, platform string, depth int) (*srcImage, error) {
	if depth > 4 {
		return nil, errors.New("image indexes nested too deep")
	}
	switch d.MediaType {
	case mtOCIIndex, mtDockerList:
		b, err := readBlob(fs, d.Digest)
		if err != nil {
			return nil, err
		}
		var idx struct {
			Manifests []ociDescriptor `json:"manifests"`
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			return nil, fmt.Errorf("decoding index %s: %w", d.Digest, err)
		}
		for _, m := range idx.Manifests {
			if m.Platform == nil || platformOf(m.Platform.OS, m.Platform.Architecture, m.Platform.Variant) == platform ||
				(m.Platform.Variant != "" && platformOf(m.Platform.OS, m.Platform.Architecture, "") == platform) {
				return ociImage(fs, where, m, platform, depth+1)
			}
		}
		return nil, nil // no image for this platform
	case mtOCIManifest, mtDockerV2, "":
		b, err := readBlob(fs, d.Digest)
		if err != nil {
			return nil, err
		}
		var man struct {
			Config ociDescriptor   `json:"config"`
			Layers []ociDescriptor `json:"layers"`
		}
		if err := json.Unmarshal(b, &man); err != nil {
			return nil, fmt.Errorf("decoding manifest %s: %w", d.Digest, err)
		}
		cfg, err := readBlob(fs, man.Config.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading config of %s: %w", d.Digest, err)
		}
		c, err := parseConfig(cfg)
		if err != nil {
			return nil, err
		}
		if len(c.RootFS.DiffIDs) != len(man.Layers) {
			return nil, fmt.Errorf("manifest %s has %d layers, its config %d", d.Digest, len(man.Layers), len(c.RootFS.DiffIDs))
		}
		img := &srcImage{fs: fs, where: where, config: cfg, id: digestOf(cfg)}
		for i, l := range man.Layers {
			p, err := blobPath(l.Digest)
			if err != nil {
				return nil, err
			}
			img.layers = append(img.layers, srcLayer{name: p, diffID: c.RootFS.DiffIDs[i]})
		}
		return img, nil
	default:
		return nil, fmt.Errorf("unsupported media type %q for %s", d.MediaType, d.Digest)
	}
}

func platformOf(os, arch, variant string) string {
	p := os + "/" + arch
	if variant != "" {
		p += "/" + variant
	}
	return p
}

// openSource opens an image source path: an OCI layout directory, or a
// docker-archive or oci-archive tar file. The closer releases it.
func openSource(p, platform string) ([]*srcImage, io.Closer, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, nil, fmt.Errorf("image source: %w", err)
	}
	if st.IsDir() {
		imgs, err := ociLayoutImages(dirFS(p), p, platform)
		return imgs, io.NopCloser(nil), err
	}
	t, err := openTarFS(p)
	if err != nil {
		return nil, nil, err
	}
	var imgs []*srcImage
	switch {
	case t.has("manifest.json"):
		imgs, err = dockerArchiveImages(t, p)
	case t.has("index.json") && t.has("oci-layout"):
		imgs, err = ociLayoutImages(t, p, platform)
	default:
		err = fmt.Errorf("%s is neither a docker-archive (manifest.json) nor an oci-archive (index.json, oci-layout)", p)
	}
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	return imgs, t, nil
}

func (t *tarFS) has(name string) bool {
	_, ok := t.files[name]
	return ok
}

// sortedUnique sorts and deduplicates names.
func sortedUnique(names []string) []string {
	sort.Strings(names)
	out := names[:0]
	for i, n := range names {
		if i == 0 || n != names[i-1] {
			out = append(out, n)
		}
	}
	return out
}

// compression magic numbers of layer blobs.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

func isCompressed(head []byte) bool {
	return bytes.HasPrefix(head, gzipMagic) || bytes.HasPrefix(head, zstdMagic)
}
