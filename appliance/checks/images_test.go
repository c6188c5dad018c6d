package checks

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/outpostdev/outpost/appliance/bundle"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// tfile is one entry of a test layer.
type tfile struct {
	name    string
	content string
	link    string // symlink target
}

// layerOf makes an (uncompressed) layer with the given entries.
func layerOf(t *testing.T, files ...tfile) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if f.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, f.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if f.link == "" {
			if _, err := tw.Write([]byte(f.content)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"

var okLabels = map[string]string{
	"org.opencontainers.image.version": "1.2.3",
	"org.opencontainers.image.source":  "https://example.com/repo",
}

// testImage builds an image from a config and layers.
func testImage(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux", Config: cfg, RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// archiveOf writes img as a docker-archive tagged ref.
func archiveOf(t *testing.T, img v1.Image, ref string) []byte {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeImages serves docker-archives as an ImageEngine.
type fakeImages struct{ archives map[string][]byte }

func (f *fakeImages) ImageInspect(_ context.Context, ref string) (engine.ImageInfo, error) {
	if _, ok := f.archives[ref]; !ok {
		return engine.ImageInfo{}, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	return engine.ImageInfo{ID: "sha256:" + ref}, nil
}

func (f *fakeImages) SaveImage(_ context.Context, ref string, w io.Writer) error {
	a, ok := f.archives[ref]
	if !ok {
		return engine.ErrNotFound
	}
	_, err := w.Write(a)
	return err
}

func healthcheck() *model.Healthcheck {
	return &model.Healthcheck{Test: []string{"CMD", "/bin/true"}}
}

// findResult returns the result of check for subject.
func findResult(t *testing.T, rep *Report, subject, check string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Subject == subject && r.Check == check {
			return r
		}
	}
	t.Fatalf("no %s result for %s in %+v", check, subject, rep.Results)
	return Result{}
}

func randomBytes(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestImages(t *testing.T) {
	base := tfile{name: "etc/passwd", content: passwd}
	clean := v1.Config{User: "app", Labels: okLabels, Entrypoint: []string{"/app/server"},
		Healthcheck: &v1.HealthConfig{Test: []string{"CMD", "/app/server", "health"}}}
	entry := "#!/bin/sh\nchown -R app /data\nexec gosu app \"$@\"\n"
	withRoot := clean
	withRoot.User = ""
	gosu := withRoot
	gosu.Entrypoint = []string{"docker-entrypoint.sh"}
	gosu.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	secretEnv := clean
	secretEnv.Env = []string{"PATH=/bin", "DB_PASSWORD=hunter2", "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE"}
	noHealth := clean
	noHealth.Healthcheck = nil
	noLabels := clean
	noLabels.Labels = map[string]string{"org.opencontainers.image.version": "1"}

	images := map[string]v1.Image{
		"test/clean:1":     testImage(t, clean, layerOf(t, base, tfile{name: "app/server", content: "binary"}, tfile{name: "etc/ssl/certs/ca.pem", content: "-----BEGIN CERTIFICATE-----\n"})),
		"test/root:1":      testImage(t, withRoot, layerOf(t, base)),
		"test/gosu:1":      testImage(t, gosu, layerOf(t, base, tfile{name: "usr/local/bin/docker-entrypoint.sh", content: entry})),
		"test/declared:1":  testImage(t, gosu, layerOf(t, base, tfile{name: "usr/local/bin/docker-entrypoint.sh", content: entry})),
		"test/secretenv:1": testImage(t, secretEnv, layerOf(t, base)),
		"test/dotenv:1": testImage(t, clean,
			layerOf(t, base, tfile{name: "app/.env", content: "DB_PASSWORD=x\n"}, tfile{name: "app/.env.example", content: "DB_PASSWORD=\n"}),
			layerOf(t, tfile{name: "app/.wh..env", content: ""})),
		"test/keys:1": testImage(t, clean, layerOf(t, base,
			tfile{name: "root/.ssh/id_ed25519", content: "-----BEGIN OPENSSH PRIVATE KEY-----\n"},
			tfile{name: "srv/tls/server.key", content: "-----BEGIN PRIVATE KEY-----\n"},
			tfile{name: "root/.npmrc", content: "//registry.npmjs.org/:_authToken=npm_0123456789abcdef\n"},
			tfile{name: "root/.aws/credentials", content: "[default]\n"},
			tfile{name: "usr/lib/python3/test/keycert.pem", content: "-----BEGIN RSA PRIVATE KEY-----\n"})),
		"test/opaque:1": testImage(t, clean,
			layerOf(t, base, tfile{name: "build/.git-credentials", content: "https://u:p@github.com\n"}),
			layerOf(t, tfile{name: "build/.wh..wh..opq"})),
		"test/nohealth:1": testImage(t, noHealth, layerOf(t, base)),
		"test/labels:1":   testImage(t, noLabels, layerOf(t, base)),
		"test/big:1":      testImage(t, clean, layerOf(t, base, tfile{name: "blob", content: randomBytes(t, 3<<20)})),
	}
	fake := &fakeImages{archives: map[string][]byte{}}
	for ref, img := range images {
		fake.archives[ref] = archiveOf(t, img, ref)
	}
	svc := func(name, image string) *model.Service {
		return &model.Service{Name: name, Image: image}
	}
	app := &model.Appliance{Name: "shop", Services: map[string]*model.Service{}, Checks: &model.Checks{
		SizeBudgets:           map[string]string{"big": "2MB", "clean": "1MB"},
		CompressedSizeBudgets: map[string]string{"big": "1MB"},
		PrivilegeDrop:         []string{"declared"},
	}}
	for _, n := range []string{"clean", "root", "gosu", "declared", "secretenv", "dotenv", "keys", "opaque", "nohealth", "labels", "big"} {
		app.Services[n] = svc(n, "test/"+n+":1")
	}
	app.Services["nohealth"].ReadyMarkers = nil
	app.Services["missing"] = svc("missing", "test/missing:1")
	// A Compose healthcheck makes up for the image's missing one.
	app.Services["nohealth2"] = svc("nohealth2", "test/nohealth:1")
	app.Services["nohealth2"].Healthcheck = healthcheck()

	rep, err := Images(context.Background(), ImagesOptions{Appliance: app, Engine: fake, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := WriteTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", table.String())

	want := []struct {
		image, check string
		status       Status
		detail       string // substring of Detail or of a note
	}{
		{"test/clean:1", CheckLabels, Pass, "version=1.2.3"},
		{"test/clean:1", CheckNonRoot, Pass, "runs as app"},
		{"test/clean:1", CheckSecrets, Pass, "none in"},
		{"test/clean:1", CheckHealthcheck, Pass, "image HEALTHCHECK"},
		{"test/clean:1", CheckSize, Pass, "budget 1MB"},
		{"test/root:1", CheckNonRoot, Fail, "runs as root"},
		{"test/gosu:1", CheckNonRoot, Warn, "docker-entrypoint.sh runs \"gosu\""},
		{"test/declared:1", CheckNonRoot, Pass, "privilege_drop declares"},
		{"test/secretenv:1", CheckSecrets, Fail, "env DB_PASSWORD"},
		{"test/secretenv:1", CheckSecrets, Fail, "AWS access key ID"},
		{"test/dotenv:1", CheckSecrets, Fail, "/app/.env: .env file (layer 0); deleted in layer 1"},
		{"test/keys:1", CheckSecrets, Fail, "/root/.ssh/id_ed25519"},
		{"test/keys:1", CheckSecrets, Fail, "/srv/tls/server.key: private key (PEM)"},
		{"test/keys:1", CheckSecrets, Fail, "/root/.npmrc"},
		{"test/keys:1", CheckSecrets, Fail, "/root/.aws/credentials"},
		{"test/keys:1", CheckSecrets, Fail, "WARN /usr/lib/python3/test/keycert.pem"},
		{"test/opaque:1", CheckSecrets, Fail, "deleted in layer 1"},
		{"test/nohealth:1", CheckHealthcheck, Fail, "for nohealth:"},
		{"test/labels:1", CheckLabels, Fail, "org.opencontainers.image.source"},
		{"test/big:1", CheckSize, Fail, "OVER the uncompressed budget 2MB (x-outpost.checks.size_budgets.big)"},
		{"test/big:1", CheckSize, Fail, "OVER the compressed budget 1MB"},
		{"test/missing:1", CheckPresent, Fail, "not in local storage"},
	}
	for _, w := range want {
		r := findResult(t, rep, w.image, w.check)
		text := r.Detail + "\n" + strings.Join(r.Notes, "\n")
		if r.Status != w.status || !strings.Contains(text, w.detail) {
			t.Errorf("%s %s: %s %q, want %s with %q", w.image, w.check, r.Status, text, w.status, w.detail)
		}
	}
	if n := strings.Count(strings.Join(findResult(t, rep, "test/dotenv:1", CheckSecrets).Notes, "\n"), ".env.example"); n != 0 {
		t.Errorf(".env.example reported as a secret")
	}
	if !rep.Failed() {
		t.Error("report with failures says it passed")
	}

	// The same image checked from a docker-archive file, without an engine.
	dir := t.TempDir()
	p := filepath.Join(dir, "clean.tar")
	if err := os.WriteFile(p, fake.archives["test/clean:1"], 0o644); err != nil {
		t.Fatal(err)
	}
	only := &model.Appliance{Name: "one", Services: map[string]*model.Service{"clean": svc("clean", "test/clean:1")}}
	missing, err := NotInArchives(only, nil, []string{p}, "")
	if err != nil || len(missing) != 0 {
		t.Fatalf("NotInArchives = %v, %v", missing, err)
	}
	rep, err = Images(context.Background(), ImagesOptions{Appliance: only, Archives: []string{p}, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() || len(rep.Results) != 5 {
		t.Fatalf("clean image from an archive: %+v", rep.Results)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left in %s: %v", dir, entries)
	}
}

func TestLayerWhiteoutsAndCapture(t *testing.T) {
	layers := []v1.Layer{
		layerOf(t, tfile{name: "etc/passwd", content: "old"}, tfile{name: "opt/app/entry.sh", content: "v1"}, tfile{name: "keep/.env", content: "A=1"}),
		layerOf(t, tfile{name: "etc/passwd", content: "new"}, tfile{name: "opt/.wh..wh..opq"}),
		layerOf(t, tfile{name: "keep/.env", content: "A=2"}),
	}
	var sources []layerSource
	for _, l := range layers {
		sources = append(sources, layerSource{open: l.Uncompressed})
	}
	scan, err := scanLayers(context.Background(), sources, map[string]bool{"/etc/passwd": true, "/opt/app/entry.sh": true}, nil, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(scan.Files["/etc/passwd"]); got != "new" {
		t.Errorf("/etc/passwd = %q, want the upper layer's", got)
	}
	if _, ok := scan.Files["/opt/app/entry.sh"]; ok {
		t.Error("a file under an opaque directory is still captured")
	}
	if len(scan.Findings) != 2 {
		t.Fatalf("findings = %v", scan.Findings)
	}
	if !strings.Contains(scan.Findings[0].Note+scan.Findings[1].Note, "overwritten in layer 2") {
		t.Errorf("the overwritten .env has no note: %v", scan.Findings)
	}
	if scan.Uncompressed <= 0 || scan.Compressed <= 0 {
		t.Errorf("sizes %d/%d", scan.Uncompressed, scan.Compressed)
	}
}

// Images come from an Outpost bundle in one pass, without an engine.
func TestImagesFromBundle(t *testing.T) {
	dir := t.TempDir()
	clean := v1.Config{User: "app", Labels: okLabels, Healthcheck: &v1.HealthConfig{Test: []string{"CMD", "/x"}}}
	root := clean
	root.User = ""
	archives := map[string]v1.Image{
		"test/clean:1": testImage(t, clean, layerOf(t, tfile{name: "etc/passwd", content: passwd})),
		"test/root:1":  testImage(t, root, layerOf(t, tfile{name: "etc/passwd", content: passwd}, tfile{name: "app/.env", content: "X=1"})),
	}
	var sources []string
	for ref, img := range archives {
		p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
		if err := os.WriteFile(p, archiveOf(t, img, ref), 0o644); err != nil {
			t.Fatal(err)
		}
		sources = append(sources, p)
	}
	compose := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(compose, []byte("services: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, key, err := bundle.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "app.bundle")
	_, err = bundle.Build(context.Background(), bundle.BuildOptions{
		Appliance: "shop", ComposeFiles: []string{compose}, SignKey: key, Output: out, Sources: sources,
		Images: []bundle.ImageRef{{Ref: "test/clean:1", Services: []string{"a"}}, {Ref: "test/root:1", Services: []string{"b"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	app := &model.Appliance{Name: "shop", Services: map[string]*model.Service{
		"a": {Name: "a", Image: "test/clean:1"}, "b": {Name: "b", Image: "test/root:1"},
	}}
	if missing, err := NotInArchives(app, nil, nil, out); err != nil || len(missing) != 0 {
		t.Fatalf("NotInArchives with the bundle = %v, %v", missing, err)
	}
	rep, err := Images(context.Background(), ImagesOptions{Appliance: app, Bundle: out, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if r := findResult(t, rep, "test/clean:1", CheckNonRoot); r.Status != Pass {
		t.Errorf("clean non-root: %+v", r)
	}
	if r := findResult(t, rep, "test/root:1", CheckNonRoot); r.Status != Fail {
		t.Errorf("root non-root: %+v", r)
	}
	if r := findResult(t, rep, "test/root:1", CheckSecrets); r.Status != Fail {
		t.Errorf("root secrets: %+v", r)
	}
}
