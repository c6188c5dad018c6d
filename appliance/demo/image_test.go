package demo

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/outpostdev/outpost/appliance/engine"
)

// fakeBinary writes a small stand-in for the outpost binary.
func fakeBinary(t *testing.T, content string) (string, []byte) {
	t.Helper()
	b := []byte("\x7fELF fake outpost binary\n" + content + strings.Repeat("x", 4000))
	p := filepath.Join(t.TempDir(), "outpost")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func buildFrom(t *testing.T, b []byte, opts ImageOptions) v1.Image {
	t.Helper()
	img, err := BuildImage(bytes.NewReader(b), int64(len(b)), opts)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func imageIDs(t *testing.T, img v1.Image) (digest, config v1.Hash) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return d, c
}

func TestBuildImageDeterministic(t *testing.T) {
	_, b := fakeBinary(t, "one")
	d1, c1 := imageIDs(t, buildFrom(t, b, ImageOptions{}))
	d2, c2 := imageIDs(t, buildFrom(t, b, ImageOptions{}))
	if d1 != d2 || c1 != c2 {
		t.Fatalf("same binary, different images: %s/%s vs %s/%s", d1, c1, d2, c2)
	}
	_, other := fakeBinary(t, "two")
	if d3, _ := imageIDs(t, buildFrom(t, other, ImageOptions{})); d3 == d1 {
		t.Fatal("different binaries gave the same image")
	}
	if d4, _ := imageIDs(t, buildFrom(t, b, ImageOptions{Version: "1.2.3"})); d4 == d1 {
		t.Fatal("version label did not change the image")
	}
}

func TestWriteArchiveReadBack(t *testing.T) {
	_, b := fakeBinary(t, "archive")
	img := buildFrom(t, b, ImageOptions{Version: "0.9.0"})
	path := filepath.Join(t.TempDir(), "demo.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(f, img, DefaultImage); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	tag, err := name.NewTag(DefaultImage)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatalf("reading archive back: %v", err)
	}
	_, wantID := imageIDs(t, img)
	if _, gotID := imageIDs(t, back); gotID != wantID {
		t.Fatalf("image ID changed through the archive: %s vs %s", gotID, wantID)
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !reflect.DeepEqual(m[0].RepoTags, []string{DefaultImage}) {
		t.Fatalf("archive manifest = %+v", m)
	}

	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	sum := sha256.Sum256(b)
	checks := map[string][2]any{
		"user":       {c.User, "1000:1000"},
		"entrypoint": {c.Entrypoint, []string{"/outpost", "demo-role"}},
		"cmd":        {c.Cmd, []string{"sleep"}},
		"workdir":    {c.WorkingDir, "/"},
		"os":         {cf.OS, "linux"},
		"created":    {cf.Created.Time.Unix(), int64(0)},
		"build":      {c.Labels[LabelBuild], "sha256:" + hex.EncodeToString(sum[:])},
		"title":      {c.Labels["org.opencontainers.image.title"], "outpost-demo"},
		"version":    {c.Labels["org.opencontainers.image.version"], "0.9.0"},
		"source":     {c.Labels["org.opencontainers.image.source"], imageSource},
		"created-l":  {c.Labels["org.opencontainers.image.created"], "1970-01-01T00:00:00Z"},
		"health":     {c.Healthcheck.Test, []string{"CMD", "/outpost", "demo-role", "probe", "--file", DefaultReadyFile}},
	}
	for what, pair := range checks {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s = %#v, want %#v", what, pair[0], pair[1])
		}
	}
	if c.Labels["org.opencontainers.image.description"] == "" {
		t.Error("description label missing")
	}

	layers, err := back.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		mode     int64
		uid, gid int
		mtime    int64
	}
	got := map[string]entry{}
	var order []string
	var binary []byte
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		got[h.Name] = entry{h.Mode, h.Uid, h.Gid, h.ModTime.Unix()}
		if h.Name == "outpost" {
			binary, _ = io.ReadAll(tr)
		}
	}
	wantOrder := []string{"data/", "etc/", "etc/group", "etc/passwd", "outpost", "tmp/"}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Fatalf("layer entries %v, want %v", order, wantOrder)
	}
	want := map[string]entry{
		"data/":      {0o755, 1000, 1000, 0},
		"etc/":       {0o755, 0, 0, 0},
		"etc/group":  {0o644, 0, 0, 0},
		"etc/passwd": {0o644, 0, 0, 0},
		"outpost":    {0o755, 0, 0, 0},
		"tmp/":       {0o1777, 0, 0, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("layer entries:\n got %+v\nwant %+v", got, want)
	}
	if !bytes.Equal(binary, b) {
		t.Fatal("binary in the layer differs from the input")
	}
}

// fakeEngine implements the image half of engine.Engine in memory; it
// parses loaded archives the way Podman would read them.
type fakeEngine struct {
	engine.Engine
	mu         sync.Mutex
	images     map[string]engine.ImageInfo
	loads      int
	inspectErr error
	loadErr    error
}

func (f *fakeEngine) ImageInspect(_ context.Context, ref string) (engine.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inspectErr != nil {
		return engine.ImageInfo{}, f.inspectErr
	}
	info, ok := f.images[ref]
	if !ok {
		return engine.ImageInfo{}, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	return info, nil
}

func (f *fakeEngine) LoadImage(_ context.Context, r io.Reader) ([]string, error) {
	if f.loadErr != nil {
		return nil, f.loadErr // without reading, like a refusing engine
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, err
	}
	img, err := tarball.Image(opener, nil)
	if err != nil {
		return nil, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	if f.images == nil {
		f.images = map[string]engine.ImageInfo{}
	}
	for _, tag := range m[0].RepoTags {
		f.images[tag] = engine.ImageInfo{ID: cfgName.Hex, Names: m[0].RepoTags, User: cf.Config.User, Labels: cf.Config.Labels}
	}
	return m[0].RepoTags, nil
}

func TestEnsureImage(t *testing.T) {
	ctx := context.Background()
	path, b := fakeBinary(t, "ensure")
	eng := &fakeEngine{}

	id, err := EnsureImage(ctx, eng, "", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, cfg := imageIDs(t, buildFrom(t, b, ImageOptions{}))
	if eng.loads != 1 || id != cfg.Hex {
		t.Fatalf("first ensure: loads=%d id=%s, want 1 and %s", eng.loads, id, cfg.Hex)
	}
	if eng.images[DefaultImage].User != "1000:1000" {
		t.Fatalf("loaded image = %+v", eng.images[DefaultImage])
	}

	id2, err := EnsureImage(ctx, eng, DefaultImage, path, nil)
	if err != nil || id2 != id || eng.loads != 1 {
		t.Fatalf("second ensure: id=%s err=%v loads=%d, want no reload", id2, err, eng.loads)
	}

	// A replaced binary (new size and mtime) is hashed again and rebuilt.
	if err := os.WriteFile(path, append(b, "v2"...), 0o755); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	id3, err := EnsureImage(ctx, eng, "", path, nil)
	if err != nil || id3 == id || eng.loads != 2 {
		t.Fatalf("after binary change: id=%s err=%v loads=%d", id3, err, eng.loads)
	}

	// Engine errors are reported, and a refusing LoadImage does not hang
	// the archive writer.
	eng.inspectErr = errors.New("socket gone")
	if _, err := EnsureImage(ctx, eng, "", path, nil); err == nil || !strings.Contains(err.Error(), "socket gone") {
		t.Fatalf("inspect error = %v", err)
	}
	refusing := &fakeEngine{loadErr: errors.New("no space left")}
	if _, err := EnsureImage(ctx, refusing, "", path, nil); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("load error = %v", err)
	}
	if _, err := EnsureImage(ctx, eng, "", filepath.Join(t.TempDir(), "absent"), nil); err == nil {
		t.Fatal("missing binary accepted")
	}
}
