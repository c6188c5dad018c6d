package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/outpostdev/outpost/appliance/engine"
)

// testKey is a fixed key so seeds and golden bytes stay stable.
func testKey(seed byte) ed25519.PrivateKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

func testTrust(seed byte) *Trust {
	return NewTrust(testKey(seed).Public().(ed25519.PublicKey))
}

// layerTar makes an uncompressed layer tar with one file of n
// pseudo-random bytes.
func layerTar(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/f%d", seed), Mode: 0o644, Size: int64(n), ModTime: epoch})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return buf.Bytes()
}

type testImage struct {
	config []byte
	id     string
	layers [][]byte
	tags   []string
}

func newTestImage(seed uint64, tags []string, sizes ...int) *testImage {
	img := &testImage{tags: tags}
	var diffIDs []string
	for i, n := range sizes {
		l := layerTar(seed*100+uint64(i), n)
		img.layers = append(img.layers, l)
		diffIDs = append(diffIDs, digestOf(l))
	}
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
		"config": map[string]any{"Labels": map[string]string{
			"org.opencontainers.image.version": "1.2.0",
			"org.opencontainers.image.source":  "https://example.com/app",
			"test.seed":                        fmt.Sprint(seed),
		}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	}
	img.config, _ = json.Marshal(cfg)
	img.id = digestOf(img.config)
	return img
}

// dockerArchive writes img as docker save would (layers in dirs, config
// first, manifest.json last).
func (img *testImage) dockerArchive() []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(name string, b []byte) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch})
		_, _ = tw.Write(b)
	}
	hexID := strings.TrimPrefix(img.id, "sha256:")
	put(hexID+".json", img.config)
	var names []string
	for i, l := range img.layers {
		n := fmt.Sprintf("layer%d/layer.tar", i)
		put(n, l)
		names = append(names, n)
	}
	man, _ := json.Marshal([]map[string]any{{"Config": hexID + ".json", "RepoTags": img.tags, "Layers": names}})
	put("manifest.json", man)
	_ = tw.Close()
	return buf.Bytes()
}

// ociLayout writes img as an OCI layout directory with gzip layers,
// annotated with ref.
func (img *testImage) ociLayout(t *testing.T, dir, ref string) {
	t.Helper()
	blob := func(b []byte) ociDescriptor {
		d := digestOf(b)
		p := filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ociDescriptor{Digest: d, Size: int64(len(b))}
	}
	cfg := blob(img.config)
	cfg.MediaType = "application/vnd.oci.image.config.v1+json"
	var layers []ociDescriptor
	for _, l := range img.layers {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write(l)
		_ = zw.Close()
		d := blob(gz.Bytes())
		d.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
		layers = append(layers, d)
	}
	man, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtOCIManifest, "config": cfg, "layers": layers})
	md := blob(man)
	md.MediaType = mtOCIManifest
	md.Annotations = map[string]string{annotationRef: ref}
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []ociDescriptor{md}})
	if err := os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeEngine is an in-memory image store that reads archives the way
// Podman's load endpoint does: the whole body first, then the import; a
// body that ends in an error imports nothing.
type fakeEngine struct {
	mu       sync.Mutex
	images   map[string]*testImage // by ID
	tags     map[string]string     // normalised ref -> ID
	root     string
	loads    int
	failLoad func(n int) error
	saved    map[string][]byte // ID -> archive for SaveImage
}

var (
	_ ImageEngine = (*fakeEngine)(nil)
	_ ImageSaver  = (*fakeEngine)(nil)
)

func newFakeEngine(t *testing.T) *fakeEngine {
	return &fakeEngine{images: map[string]*testImage{}, tags: map[string]string{}, root: t.TempDir(), saved: map[string][]byte{}}
}

func (f *fakeEngine) add(img *testImage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[img.id] = img
	f.saved[img.id] = img.dockerArchive()
	for _, tg := range img.tags {
		f.tags[NormalizeRef(tg)] = img.id
	}
}

func (f *fakeEngine) resolve(ref string) (string, bool) {
	if strings.HasPrefix(ref, "sha256:") {
		_, ok := f.images[ref]
		return ref, ok
	}
	if hexRe.MatchString(ref) {
		_, ok := f.images["sha256:"+ref]
		return "sha256:" + ref, ok
	}
	id, ok := f.tags[NormalizeRef(ref)]
	return id, ok
}

func (f *fakeEngine) ImageInspect(_ context.Context, ref string) (engine.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.resolve(ref)
	if !ok {
		return engine.ImageInfo{}, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	info := engine.ImageInfo{ID: strings.TrimPrefix(id, "sha256:")}
	for r, i := range f.tags {
		if i == id {
			info.Names = append(info.Names, r)
		}
	}
	sort.Strings(info.Names)
	return info, nil
}

func (f *fakeEngine) LoadImage(_ context.Context, r io.Reader) ([]string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("unable to write archive to temporary file: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	if f.failLoad != nil {
		if err := f.failLoad(f.loads); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files[hdr.Name] = b
	}
	var man []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil || len(man) != 1 {
		return nil, fmt.Errorf("no usable manifest.json: %v", err)
	}
	img := &testImage{config: files[man[0].Config], tags: man[0].RepoTags}
	img.id = digestOf(img.config)
	for _, l := range man[0].Layers {
		b, ok := files[l]
		if !ok {
			return nil, fmt.Errorf("layer %s missing", l)
		}
		img.layers = append(img.layers, b)
	}
	f.images[img.id] = img
	f.saved[img.id] = data
	for _, tg := range img.tags {
		f.tags[NormalizeRef(tg)] = img.id
	}
	return img.tags, nil
}

func (f *fakeEngine) SaveImage(_ context.Context, ref string, w io.Writer) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.resolve(ref)
	if !ok {
		return fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	_, err := w.Write(f.saved[id])
	return err
}

func (f *fakeEngine) TagImage(_ context.Context, id, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rid, ok := f.resolve(id)
	if !ok {
		return fmt.Errorf("image %s: %w", id, engine.ErrNotFound)
	}
	f.tags[NormalizeRef(ref)] = rid
	return nil
}

func (f *fakeEngine) RemoveImage(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	rid, ok := f.resolve(id)
	if !ok {
		return fmt.Errorf("image %s: %w", id, engine.ErrNotFound)
	}
	delete(f.images, rid)
	for r, i := range f.tags {
		if i == rid {
			delete(f.tags, r)
		}
	}
	return nil
}

func (f *fakeEngine) ImageStore(context.Context) (engine.ImageStoreInfo, error) {
	return engine.ImageStoreInfo{GraphRoot: f.root}, nil
}

// state is a comparable snapshot of the store.
func (f *fakeEngine) state() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids, tags []string
	for id := range f.images {
		ids = append(ids, id)
	}
	for r, id := range f.tags {
		tags = append(tags, r+"="+id)
	}
	sort.Strings(ids)
	sort.Strings(tags)
	return strings.Join(ids, ",") + "|" + strings.Join(tags, ",")
}

// fixture is a built test bundle and what went into it.
type fixture struct {
	dir    string
	path   string
	images []*testImage
	res    *BuildResult
}

// buildFixture builds a bundle with two images (one from a docker-archive
// source, one from the engine's storage), two Compose files, an env file,
// a fake outpost binary and install.sh.
func buildFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	fx := &fixture{dir: dir, path: filepath.Join(dir, "app-1.2.0.outpost")}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	compose := write("compose.yml", "name: app\nservices:\n  api:\n    image: ghcr.io/acme/api:1.2.0\n  db:\n    image: postgres:16\n")
	override := write("compose.prod.yml", "services:\n  api:\n    environment:\n      MODE: prod\n")
	env := write("prod.env", "MODE=prod\n")
	bin := write("outpost", "#!/bin/sh\necho fake outpost\n")
	inst := write("install.sh", "#!/bin/sh\nset -eu\n")

	api := newTestImage(1, []string{"ghcr.io/acme/api:1.2.0", "ghcr.io/acme/api:sha-abc1234"}, 3000, 70000)
	db := newTestImage(2, []string{"docker.io/library/postgres:16"}, 50000)
	fx.images = []*testImage{api, db}
	arch := filepath.Join(dir, "api.tar")
	if err := os.WriteFile(arch, api.dockerArchive(), 0o644); err != nil {
		t.Fatal(err)
	}
	src := newFakeEngine(t)
	src.add(db)

	res, err := Build(context.Background(), BuildOptions{
		Appliance: "app", Version: "1.2.0",
		ComposeFiles: []string{compose, override}, EnvFiles: []string{env},
		Images: []ImageRef{
			{Ref: "ghcr.io/acme/api:1.2.0", Services: []string{"api"}},
			{Ref: "postgres:16", Services: []string{"db"}},
		},
		Sources: []string{arch}, Engine: src,
		Outpost: bin, OutpostVersion: "v0.0.0-test", InstallScript: inst,
		SignKey: testKey(1), Output: fx.path,
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	fx.res = res
	return fx
}

// tarEntry is one member of a bundle's tar stream, for tampering.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func readBundleTar(t *testing.T, path string) []tarEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{hdr: *hdr, data: b})
	}
}

func tarBytes(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA { //nolint:staticcheck
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeBundleTar(t *testing.T, path string, entries []tarEntry) {
	t.Helper()
	writeZstd(t, path, tarBytes(t, entries))
}

func writeZstd(t testing.TB, path string, data []byte) {
	t.Helper()
	zw, _ := zstd.NewWriter(nil)
	if err := os.WriteFile(path, zw.EncodeAll(data, nil), 0o644); err != nil {
		t.Fatal(err)
	}
}

// resign replaces the signature entry with one over the (possibly
// changed) manifest by key.
func resign(t *testing.T, entries []tarEntry, key ed25519.PrivateKey) {
	t.Helper()
	sig, err := Sign(entries[0].data, key)
	if err != nil {
		t.Fatal(err)
	}
	entries[1].data = sig
}

func entryIndex(t *testing.T, entries []tarEntry, prefix string) int {
	t.Helper()
	for i, e := range entries {
		if strings.HasPrefix(e.hdr.Name, prefix) {
			return i
		}
	}
	t.Fatalf("no entry %s*", prefix)
	return -1
}

func isAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
