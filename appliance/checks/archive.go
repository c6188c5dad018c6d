package checks

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// imageArchive is a docker-archive (what `podman save` writes) unpacked
// into a directory: its manifest, config and layer files.
type imageArchive struct {
	repoTags []string
	// configDigest is "sha256:<hex>" of the config: Podman's image ID.
	configDigest string
	config       *v1.ConfigFile
	layers       []string
}

// dockerManifest is one entry of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// unpackArchive reads a docker-archive stream into dir (which must exist
// and be empty) and parses it. It holds exactly one image.
func unpackArchive(r io.Reader, dir string) (*imageArchive, error) {
	links := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading image archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return nil, fmt.Errorf("unpacking image archive: %w", err)
			}
		case tar.TypeSymlink, tar.TypeLink:
			target := h.Linkname
			if h.Typeflag == tar.TypeSymlink {
				target = path.Join(path.Dir(name), h.Linkname)
			}
			links[name] = path.Clean(target)
		case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return nil, fmt.Errorf("unpacking image archive: %w", err)
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, fmt.Errorf("unpacking image archive: %w", err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return nil, fmt.Errorf("unpacking image archive (%s): %w", name, err)
			}
		}
	}
	// Drain what follows the tar end so a streaming writer can finish.
	_, _ = io.Copy(io.Discard, r)
	resolve := func(name string) string {
		name = path.Clean(name)
		for i := 0; i < 8; i++ {
			t, ok := links[name]
			if !ok {
				break
			}
			name = t
		}
		return filepath.Join(dir, filepath.FromSlash(name))
	}
	raw, err := os.ReadFile(resolve("manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("image archive has no readable manifest.json (is it a docker-archive?): %w", err)
	}
	var ms []dockerManifest
	if err := json.Unmarshal(raw, &ms); err != nil {
		return nil, fmt.Errorf("parsing the image archive's manifest.json: %w", err)
	}
	if len(ms) != 1 {
		return nil, fmt.Errorf("image archive holds %d images; want exactly one", len(ms))
	}
	m := ms[0]
	cf, err := os.Open(resolve(m.Config))
	if err != nil {
		return nil, fmt.Errorf("opening image config %s: %w", m.Config, err)
	}
	defer cf.Close()
	h, _, err := v1.SHA256(cf)
	if err != nil {
		return nil, fmt.Errorf("hashing image config: %w", err)
	}
	if _, err := cf.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(cf)
	if err != nil {
		return nil, fmt.Errorf("parsing image config %s: %w", m.Config, err)
	}
	a := &imageArchive{repoTags: m.RepoTags, configDigest: h.String(), config: cfg}
	for _, l := range m.Layers {
		p := resolve(l)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("image archive lacks layer %s: %w", l, err)
		}
		a.layers = append(a.layers, p)
	}
	return a, nil
}

// sources returns the layers to scan, with their diff IDs from the config
// when it lists one per layer.
func (a *imageArchive) sources() []layerSource {
	out := make([]layerSource, len(a.layers))
	ids := a.config.RootFS.DiffIDs
	for i, p := range a.layers {
		out[i].open = func() (io.ReadCloser, error) { return os.Open(p) }
		if len(ids) == len(a.layers) {
			out[i].diffID = ids[i].String()
		}
	}
	return out
}

// manifestTags reads the RepoTags from a docker-archive stream without
// unpacking its layers.
func manifestTags(r io.Reader) ([]string, error) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no manifest.json: not a docker-archive (save it with `podman save -o FILE IMAGE`)")
		}
		if err != nil {
			return nil, err
		}
		if path.Clean(strings.TrimPrefix(h.Name, "./")) != "manifest.json" {
			continue
		}
		var ms []dockerManifest
		if err := json.NewDecoder(tr).Decode(&ms); err != nil {
			return nil, fmt.Errorf("parsing manifest.json: %w", err)
		}
		var tags []string
		for _, m := range ms {
			tags = append(tags, m.RepoTags...)
		}
		return tags, nil
	}
}
