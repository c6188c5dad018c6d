package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/bundle"
	"github.com/outpostdev/outpost/appliance/model"
)

func TestPinImages(t *testing.T) {
	app := &model.Appliance{Services: map[string]*model.Service{
		"db":  {Name: "db", Image: "postgres:16"},
		"api": {Name: "api", Image: "ghcr.io/acme/api:1.2.0"},
		"own": {Name: "own", Image: "localhost/other:1"},
	}}
	m := &bundle.Manifest{Images: []bundle.Image{
		{ID: "sha256:" + strings.Repeat("a", 64), Refs: []string{"docker.io/library/postgres:16"}},
		{ID: "sha256:" + strings.Repeat("b", 64), Refs: []string{"ghcr.io/acme/api:1.2.0", "ghcr.io/acme/api:sha-abc1234"}},
	}}
	pinImages(app, m)
	if got := app.Services["db"].Image; got != m.Images[0].ID {
		t.Errorf("db image %s", got)
	}
	if got := app.Services["api"].Image; got != m.Images[1].ID {
		t.Errorf("api image %s", got)
	}
	if got := app.Services["own"].Image; got != "localhost/other:1" {
		t.Errorf("an image the bundle does not carry was changed: %s", got)
	}
}

// The CLI round trip without Podman: keygen, build from an archive,
// verify, inspect; a wrong key is refused with the key IDs named.
func TestBundleCommandsWithoutPodman(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("OUTPOST_BUNDLE_PUBKEY", "")
	img := filepath.Join(dir, "web.tar")
	writeTestArchive(t, img, "localhost/web:1")
	os.WriteFile("compose.yml", []byte("name: small\nservices:\n  web:\n    image: localhost/web:1\n"), 0o644)
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), args, Streams{In: strings.NewReader(""), Out: &out, Err: &errb})
		return out.String(), errb.String(), code
	}
	for _, args := range [][]string{
		{"bundle", "keygen", "-o", "v"},
		{"bundle", "keygen", "-o", "w"},
		{"bundle", "build", "-q", "-f", "compose.yml", "-o", "s.outpost", "--sign-key", "v.key", "--from", img, "--no-outpost-bin"},
		{"bundle", "verify", "-q", "s.outpost", "--pubkey", "v.pub"},
		{"bundle", "inspect", "s.outpost"},
	} {
		if out, errs, code := run(args...); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	_, errs, code := run("bundle", "verify", "-q", "s.outpost", "--pubkey", "w.pub")
	if code == 0 || !strings.Contains(errs, "not trusted") {
		t.Fatalf("wrong key: exit %d: %s", code, errs)
	}
	_, errs, code = run("bundle", "verify", "s.outpost")
	if code == 0 || !strings.Contains(errs, "--pubkey") {
		t.Fatalf("no key: exit %d: %s", code, errs)
	}
}

// writeTestArchive writes a one-layer docker-archive tagged tag.
func writeTestArchive(t *testing.T, path, tag string) {
	t.Helper()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o644, Size: 5})
	lw.Write([]byte("hello"))
	lw.Close()
	diff := sha256.Sum256(layer.Bytes())
	cfg := []byte(`{"architecture":"` + runtime.GOARCH + `","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:` + hex.EncodeToString(diff[:]) + `"]}}`)
	cfgSum := sha256.Sum256(cfg)
	man := []byte(`[{"Config":"` + hex.EncodeToString(cfgSum[:]) + `.json","RepoTags":["` + tag + `"],"Layers":["l/layer.tar"]}]`)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, m := range []struct {
		name string
		data []byte
	}{{hex.EncodeToString(cfgSum[:]) + ".json", cfg}, {"l/layer.tar", layer.Bytes()}, {"manifest.json", man}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: m.name, Mode: 0o644, Size: int64(len(m.data))})
		tw.Write(m.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
