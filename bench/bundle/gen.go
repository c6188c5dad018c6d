package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// genImage describes one generated image.
type genImage struct {
	Ref     string
	Archive string
	Bytes   int64
}

// generate writes n docker-archives of about total bytes in all under dir,
// tagged localhost/outpost-bench-bundle/imgI:1.0.0, and returns them. The
// content is derived from seed only (the same seed gives byte-identical
// archives), half incompressible random bytes and half text-like runs, so
// zstd neither wins nor loses much, as with real images. Existing archives
// of the right size are reused.
func generate(dir string, n int, total int64, seed uint64) ([]genImage, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []genImage
	per := total / int64(n)
	for i := 0; i < n; i++ {
		ref := fmt.Sprintf("localhost/outpost-bench-bundle/img%d:1.0.0", i)
		path := filepath.Join(dir, fmt.Sprintf("img%d.tar", i))
		marker := path + fmt.Sprintf(".%d-%d.ok", per, seed)
		if _, err := os.Stat(marker); err == nil {
			st, err := os.Stat(path)
			if err == nil {
				out = append(out, genImage{Ref: ref, Archive: path, Bytes: st.Size()})
				continue
			}
		}
		// Two layers per image: a big one and a small one, like a base
		// plus an application layer.
		big := &genLayer{seed: seed*1000 + uint64(i)*2, size: per * 9 / 10}
		small := &genLayer{seed: seed*1000 + uint64(i)*2 + 1, size: per / 10}
		img, err := genImageOf(ref, i, big, small)
		if err != nil {
			return nil, err
		}
		tag, err := name.NewTag(ref)
		if err != nil {
			return nil, err
		}
		f, err := os.Create(path)
		if err != nil {
			return nil, err
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		if err := tarball.Write(tag, img, bw); err != nil {
			f.Close()
			return nil, fmt.Errorf("writing %s: %w", path, err)
		}
		if err := bw.Flush(); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return nil, err
		}
		out = append(out, genImage{Ref: ref, Archive: path, Bytes: st.Size()})
	}
	return out, nil
}

func genImageOf(ref string, i int, layers ...*genLayer) (v1.Image, error) {
	for _, l := range layers {
		if err := l.init(); err != nil {
			return nil, err
		}
	}
	created := time.Unix(1700000000, 0).UTC()
	cfg := &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Cmd: []string{"/data/run"},
			Labels: map[string]string{
				"org.opencontainers.image.title":   fmt.Sprintf("bench image %d", i),
				"org.opencontainers.image.version": "1.0.0",
				"org.opencontainers.image.source":  "https://github.com/outpostdev/outpost/tree/main/bench/bundle",
				"org.opencontainers.image.ref":     ref,
			},
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "bench-bundle generator"}})
		if err != nil {
			return nil, err
		}
	}
	return img, nil
}

// genLayer is an uncompressed layer generated on the fly from a seed: a
// tar of 8 MiB files.
type genLayer struct {
	seed uint64
	size int64
	hash v1.Hash
	n    int64
}

var _ v1.Layer = (*genLayer)(nil)

func (l *genLayer) init() error {
	h := sha256.New()
	n, err := io.Copy(h, l.reader())
	if err != nil {
		return err
	}
	l.n = n
	l.hash = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	return nil
}

func (l *genLayer) reader() *io.PipeReader {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(l.write(pw)) }()
	return pr
}

const genFile = 8 << 20

func (l *genLayer) write(w io.Writer) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(1700000000, 0)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
		return err
	}
	rng := rand.New(rand.NewChaCha8(seed32(l.seed)))
	words := []string{"podman ", "outpost ", "bundle ", "layer ", "appliance ", "the ", "of ", "zstd ", "image ", "digest ", "\n"}
	buf := make([]byte, genFile)
	for i := int64(0); i*genFile < l.size; i++ {
		if i%2 == 0 {
			for j := 0; j < len(buf); j += 8 {
				v := rng.Uint64()
				for k := 0; k < 8 && j+k < len(buf); k++ {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			p := 0
			for p < len(buf) {
				p += copy(buf[p:], words[rng.IntN(len(words))])
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/f%05d", i), Mode: 0o644, Size: genFile, ModTime: mtime, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
		if _, err := tw.Write(buf); err != nil {
			return err
		}
	}
	return tw.Close()
}

func seed32(s uint64) [32]byte {
	var b [32]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(s >> (8 * i))
	}
	return b
}

func (l *genLayer) Digest() (v1.Hash, error)             { return l.hash, nil }
func (l *genLayer) DiffID() (v1.Hash, error)             { return l.hash, nil }
func (l *genLayer) Compressed() (io.ReadCloser, error)   { return l.reader(), nil }
func (l *genLayer) Uncompressed() (io.ReadCloser, error) { return l.reader(), nil }
func (l *genLayer) Size() (int64, error)                 { return l.n, nil }
func (l *genLayer) MediaType() (types.MediaType, error) {
	return types.DockerUncompressedLayer, nil
}
