package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestBuildManifest(t *testing.T) {
	fx := buildFixture(t)
	m := fx.res.Manifest
	var names []string
	for _, e := range m.Entries {
		names = append(names, string(e.Kind)+":"+e.Name)
	}
	api, db := fx.images[0], fx.images[1]
	hex := func(id string) string { return strings.TrimPrefix(id, "sha256:") }
	// Images sorted by ID.
	imgs := []string{"image:images/" + hex(api.id) + ".tar", "image:images/" + hex(db.id) + ".tar"}
	if api.id > db.id {
		imgs[0], imgs[1] = imgs[1], imgs[0]
	}
	want := append([]string{"compose:app/compose.yml", "compose:app/compose.prod.yml", "env:app/prod.env", "installer:bin/install.sh", "outpost:bin/outpost"}, imgs...)
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("entries:\n got %v\nwant %v", names, want)
	}
	if !reflect.DeepEqual(m.ComposeFiles, []string{"app/compose.yml", "app/compose.prod.yml"}) {
		t.Fatalf("compose files %v", m.ComposeFiles)
	}
	img, ok := m.ImageByRef("ghcr.io/acme/api:1.2.0")
	if !ok || img.ID != api.id {
		t.Fatalf("api image: %+v %v", img, ok)
	}
	// The source's other tag is recorded; the layers and labels too.
	if !reflect.DeepEqual(img.Refs, []string{"ghcr.io/acme/api:1.2.0", "ghcr.io/acme/api:sha-abc1234"}) {
		t.Fatalf("refs %v", img.Refs)
	}
	if len(img.Layers) != 2 || img.UnpackedSize != int64(len(api.layers[0])+len(api.layers[1])) {
		t.Fatalf("layers %+v unpacked %d", img.Layers, img.UnpackedSize)
	}
	if img.Labels["org.opencontainers.image.version"] != "1.2.0" || img.Platform != "linux/amd64" {
		t.Fatalf("labels/platform %v %s", img.Labels, img.Platform)
	}
	if !reflect.DeepEqual(img.Services, []string{"api"}) {
		t.Fatalf("services %v", img.Services)
	}
	pg, ok := m.ImageByRef("docker.io/library/postgres:16")
	if !ok || pg.ID != db.id {
		t.Fatalf("postgres image from engine storage: %+v", pg)
	}
	if fx.res.KeyID != KeyID(testKey(1).Public().(ed25519.PublicKey)) {
		t.Fatalf("key id %s", fx.res.KeyID)
	}
}

func TestBuildDeterministic(t *testing.T) {
	a := buildFixture(t)
	b := buildFixture(t)
	da, _ := os.ReadFile(a.path)
	db, _ := os.ReadFile(b.path)
	if !bytes.Equal(da, db) {
		t.Fatalf("two builds of the same inputs differ (%d vs %d bytes)", len(da), len(db))
	}
	if a.res.SHA256 != b.res.SHA256 {
		t.Fatal("sha256 differs")
	}
}

func TestVerifyAndInspect(t *testing.T) {
	fx := buildFixture(t)
	res, err := Verify(context.Background(), fx.path, VerifyOptions{Trust: testTrust(1)})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if res.KeyID != fx.res.KeyID || len(res.Manifest.Entries) != 7 {
		t.Fatalf("verify result %+v", res)
	}
	info, err := Inspect(fx.path, InspectOptions{})
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if info.Signature != SignatureNotChecked || info.KeyID != fx.res.KeyID {
		t.Fatalf("inspect without key: %+v", info)
	}
	info, err = Inspect(fx.path, InspectOptions{Trust: testTrust(1)})
	if err != nil || info.Signature != SignatureValid {
		t.Fatalf("inspect with key: %+v %v", info, err)
	}
	if _, err := Inspect(fx.path, InspectOptions{Trust: testTrust(2)}); !errors.Is(err, ErrSignature) {
		t.Fatalf("inspect with the wrong key: %v", err)
	}
}

func TestLoadExtractAndSkip(t *testing.T) {
	fx := buildFixture(t)
	eng := newFakeEngine(t)
	out := filepath.Join(t.TempDir(), "app", "v1")
	res, err := Load(context.Background(), fx.path, LoadOptions{Trust: testTrust(1), Engine: eng, ExtractDir: out})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(res.Loaded) != 2 || len(res.Skipped) != 0 {
		t.Fatalf("loaded %v skipped %v", res.Loaded, res.Skipped)
	}
	for _, img := range fx.images {
		got, ok := eng.images[img.id]
		if !ok {
			t.Fatalf("image %s not loaded", img.id)
		}
		if !reflect.DeepEqual(got.layers, img.layers) {
			t.Fatalf("image %s layers differ after load", img.id)
		}
	}
	if id, _ := eng.resolve("ghcr.io/acme/api:sha-abc1234"); id != fx.images[0].id {
		t.Fatalf("sha tag not applied: %q", id)
	}
	if id, _ := eng.resolve("postgres:16"); id != fx.images[1].id {
		t.Fatalf("postgres tag not applied: %q", id)
	}
	wantFiles := []string{filepath.Join(out, "app/compose.yml"), filepath.Join(out, "app/compose.prod.yml")}
	if !reflect.DeepEqual(res.ComposeFiles, wantFiles) {
		t.Fatalf("compose files %v", res.ComposeFiles)
	}
	data, err := os.ReadFile(wantFiles[0])
	if err != nil || !strings.Contains(string(data), "ghcr.io/acme/api:1.2.0") {
		t.Fatalf("extracted compose: %q %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(out, "bin/outpost")); !os.IsNotExist(err) {
		t.Fatalf("binary extracted without being asked: %v", err)
	}
	leftovers, _ := filepath.Glob(out + ".partial-*")
	if len(leftovers) != 0 {
		t.Fatalf("staging left behind: %v", leftovers)
	}

	// Again: everything present is skipped, the extraction replaced.
	loads := eng.loads
	res, err = Load(context.Background(), fx.path, LoadOptions{Trust: testTrust(1), Engine: eng, ExtractDir: out})
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}
	if len(res.Loaded) != 0 || len(res.Skipped) != 2 || eng.loads != loads {
		t.Fatalf("second load: loaded %v skipped %v loads %d->%d", res.Loaded, res.Skipped, loads, eng.loads)
	}

	// A moved tag is moved back onto the bundle's image.
	other := newTestImage(9, []string{"ghcr.io/acme/api:1.2.0"}, 100)
	eng.add(other)
	res, err = Load(context.Background(), fx.path, LoadOptions{Trust: testTrust(1), Engine: eng})
	if err != nil {
		t.Fatalf("third Load: %v", err)
	}
	if id, _ := eng.resolve("ghcr.io/acme/api:1.2.0"); id != fx.images[0].id {
		t.Fatalf("tag not moved back: %s", id)
	}
	var retagged []string
	for _, s := range res.Skipped {
		retagged = append(retagged, s.Retagged...)
	}
	if !reflect.DeepEqual(retagged, []string{"ghcr.io/acme/api:1.2.0"}) {
		t.Fatalf("retagged %v", retagged)
	}
}

func TestExtractBinaryAndInstaller(t *testing.T) {
	fx := buildFixture(t)
	out := filepath.Join(t.TempDir(), "x")
	res, err := Extract(context.Background(), fx.path, ExtractOptions{Trust: testTrust(1), Dir: out, Kinds: []Kind{KindOutpost, KindInstaller}})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	st, err := os.Stat(res.Outpost)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", st, err)
	}
	if _, err := os.Stat(res.InstallScript); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "app")); !os.IsNotExist(err) {
		t.Fatalf("compose files extracted without being asked")
	}
	// A non-empty foreign directory is not overwritten.
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "keep"), []byte("x"), 0o644)
	if _, err := Extract(context.Background(), fx.path, ExtractOptions{Trust: testTrust(1), Dir: foreign}); err == nil || !strings.Contains(err.Error(), "something other") {
		t.Fatalf("extract over a foreign dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "keep")); err != nil {
		t.Fatal("foreign file removed")
	}
}

// Every way of damaging a bundle is refused by Verify and by Load, with
// an error naming the entry, and Load changes nothing.
func TestTamperRefused(t *testing.T) {
	fx := buildFixture(t)
	orig := readBundleTar(t, fx.path)
	apiHex := strings.TrimPrefix(fx.images[0].id, "sha256:")
	flip := func(prefix string, at func(n int) int) func(t *testing.T, es []tarEntry) []tarEntry {
		return func(t *testing.T, es []tarEntry) []tarEntry {
			i := entryIndex(t, es, prefix)
			es[i].data[at(len(es[i].data))] ^= 0x01
			return es
		}
	}
	mid := func(n int) int { return n / 2 }
	last := func(n int) int { return n - 1 }
	cases := []struct {
		name   string
		mutate func(t *testing.T, es []tarEntry) []tarEntry
		raw    func(t *testing.T, b []byte) []byte // on the compressed file
		want   []error
		msg    string
	}{
		{name: "flip manifest", mutate: flip(ManifestName, mid), want: []error{ErrSignature}, msg: "modified after signing"},
		{name: "flip signature", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			// Change one base64 character of the signature value.
			s := string(es[1].data)
			i := strings.Index(s, `"signature":"`) + len(`"signature":"`) + 3
			c := byte('A')
			if s[i] == 'A' {
				c = 'B'
			}
			es[1].data = []byte(s[:i] + string(c) + s[i+1:])
			return es
		}, want: []error{ErrSignature}},
		{name: "flip compose", mutate: flip("app/compose.yml", mid), want: []error{ErrCorrupt}, msg: "app/compose.yml"},
		{name: "flip env", mutate: flip("app/prod.env", mid), want: []error{ErrCorrupt}, msg: "app/prod.env"},
		{name: "flip installer", mutate: flip("bin/install.sh", mid), want: []error{ErrCorrupt}, msg: "bin/install.sh"},
		{name: "flip outpost", mutate: flip("bin/outpost", mid), want: []error{ErrCorrupt}, msg: "bin/outpost"},
		{name: "flip image layer", mutate: flip("images/"+apiHex, mid), want: []error{ErrCorrupt}, msg: "images/" + apiHex},
		{name: "flip image tail", mutate: flip("images/"+apiHex, last), want: []error{ErrCorrupt}, msg: "images/" + apiHex},
		{name: "drop entry", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			i := entryIndex(t, es, "app/prod.env")
			return append(es[:i], es[i+1:]...)
		}, want: []error{ErrUnexpectedEntry}, msg: "out of order"},
		{name: "drop last entry", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			return es[:len(es)-1]
		}, want: []error{ErrTruncated}, msg: "missing"},
		{name: "extra entry", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			return append(es, tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "app/extra.yml", Mode: 0o644}, data: []byte("x")})
		}, want: []error{ErrUnexpectedEntry}, msg: "app/extra.yml"},
		{name: "dotdot entry", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			e := tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../evil", Mode: 0o644}, data: []byte("x")}
			return append(es[:3], append([]tarEntry{e}, es[3:]...)...)
		}, want: []error{ErrUnsafePath}, msg: `"../evil"`},
		{name: "dotdot inside", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			e := tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "app/../../etc/passwd", Mode: 0o644}, data: []byte("x")}
			return append(es, e)
		}, want: []error{ErrUnsafePath}},
		{name: "absolute entry", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			e := tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "/etc/passwd", Mode: 0o644}, data: []byte("x")}
			return append(es[:2], append([]tarEntry{e}, es[2:]...)...)
		}, want: []error{ErrUnsafePath}},
		{name: "symlink escaping", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			i := entryIndex(t, es, "app/compose.yml")
			es[i] = tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "app/compose.yml", Linkname: "../../../etc/shadow"}}
			return es
		}, want: []error{ErrUnsafePath}, msg: "symbolic link"},
		{name: "hardlink", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			e := tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "app/x.yml", Linkname: "/etc/shadow"}}
			return append(es[:2], append([]tarEntry{e}, es[2:]...)...)
		}, want: []error{ErrUnsafePath}, msg: "hard link"},
		{name: "swapped signature", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			resign(t, es, testKey(7))
			return es
		}, want: []error{ErrSignature}, msg: "not trusted"},
		{name: "manifest edited and re-signed by another key", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			es[0].data = bytes.Replace(es[0].data, []byte(`"version": "1.2.0"`), []byte(`"version": "9.9.9"`), 1)
			resign(t, es, testKey(7))
			return es
		}, want: []error{ErrSignature}},
		{name: "reordered", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			es[2], es[3] = es[3], es[2]
			return es
		}, want: []error{ErrUnexpectedEntry}, msg: "out of order"},
		{name: "size changed in header", mutate: func(t *testing.T, es []tarEntry) []tarEntry {
			i := entryIndex(t, es, "app/prod.env")
			es[i].data = append(es[i].data, '\n')
			return es
		}, want: []error{ErrCorrupt}, msg: "app/prod.env"},
		{name: "trailing garbage in tar", mutate: func(t *testing.T, es []tarEntry) []tarEntry { return es },
			raw:  func(t *testing.T, b []byte) []byte { return append(b, []byte("garbage after the end")...) },
			want: []error{ErrCorrupt, ErrUnexpectedEntry}},
		{name: "truncated mid image", raw: func(t *testing.T, b []byte) []byte { return b[:len(b)*3/4] }, want: []error{ErrTruncated, ErrCorrupt}},
		{name: "truncated near end", raw: func(t *testing.T, b []byte) []byte { return b[:len(b)-10] }, want: []error{ErrTruncated, ErrCorrupt}},
		{name: "truncated in head", raw: func(t *testing.T, b []byte) []byte { return b[:40] }, want: []error{ErrTruncated, ErrCorrupt}},
		{name: "flipped compressed byte", raw: func(t *testing.T, b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, want: []error{ErrCorrupt, ErrTruncated}},
		{name: "not zstd", raw: func(t *testing.T, b []byte) []byte { return []byte("PK\x03\x04 a zip file") }, want: []error{ErrFormat}},
		{name: "empty", raw: func(t *testing.T, b []byte) []byte { return nil }, want: []error{ErrFormat, ErrTruncated, ErrCorrupt}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.outpost")
			if tc.mutate != nil {
				es := make([]tarEntry, len(orig))
				for i, e := range orig {
					es[i] = tarEntry{hdr: e.hdr, data: append([]byte(nil), e.data...)}
				}
				writeBundleTar(t, p, tc.mutate(t, es))
			} else {
				b, _ := os.ReadFile(fx.path)
				os.WriteFile(p, b, 0o644)
			}
			if tc.raw != nil {
				b, _ := os.ReadFile(p)
				os.WriteFile(p, tc.raw(t, b), 0o644)
			}
			_, err := Verify(context.Background(), p, VerifyOptions{Trust: testTrust(1)})
			if err == nil || !isAny(err, tc.want...) {
				t.Fatalf("Verify: %v, want one of %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify error does not say %q: %v", tc.msg, err)
			}
			if !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("error does not reassure: %v", err)
			}
			for _, verifyFirst := range []bool{false, true} {
				eng := newFakeEngine(t)
				keep := newTestImage(5, []string{"ghcr.io/acme/api:1.2.0"}, 10)
				eng.add(keep)
				before := eng.state()
				out := filepath.Join(t.TempDir(), "extract")
				_, lerr := Load(context.Background(), p, LoadOptions{Trust: testTrust(1), Engine: eng, ExtractDir: out, VerifyFirst: verifyFirst})
				if lerr == nil || !isAny(lerr, tc.want...) {
					t.Fatalf("Load (verify first %v): %v, want one of %v", verifyFirst, lerr, tc.want)
				}
				if after := eng.state(); after != before {
					t.Fatalf("Load (verify first %v) changed the engine:\nbefore %s\nafter  %s", verifyFirst, before, after)
				}
				if verifyFirst && eng.loads != 0 {
					t.Fatalf("Load with VerifyFirst imported %d images from a bad bundle", eng.loads)
				}
				if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
					t.Fatalf("Load left files: %v", ents)
				}
			}
		})
	}
}

func TestLoadRollsBackFailedImport(t *testing.T) {
	fx := buildFixture(t)
	eng := newFakeEngine(t)
	old := newTestImage(5, []string{"ghcr.io/acme/api:1.2.0"}, 10)
	eng.add(old)
	before := eng.state()
	eng.failLoad = func(n int) error {
		if n == 2 {
			return errors.New("no space left on device")
		}
		return nil
	}
	_, err := Load(context.Background(), fx.path, LoadOptions{Trust: testTrust(1), Engine: eng})
	if err == nil || !strings.Contains(err.Error(), "no space left") || !strings.Contains(err.Error(), "removed again") {
		t.Fatalf("Load: %v", err)
	}
	if after := eng.state(); after != before {
		t.Fatalf("not rolled back:\nbefore %s\nafter  %s", before, after)
	}
}

func TestLoadChecksDiskFirst(t *testing.T) {
	fx := buildFixture(t)
	eng := newFakeEngine(t)
	saved := fsFree
	t.Cleanup(func() { fsFree = saved })
	fsFree = func(p string) (uint64, uint64, error) { return 1000, 1, nil }
	_, err := Load(context.Background(), fx.path, LoadOptions{Trust: testTrust(1), Engine: eng})
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "unpacked image layers") {
		t.Fatalf("Load with a full disk: %v", err)
	}
	if eng.loads != 0 || eng.state() != "|" {
		t.Fatalf("engine touched: %s", eng.state())
	}
}

func TestBuildFromOCILayoutAndMissing(t *testing.T) {
	dir := t.TempDir()
	compose := filepath.Join(dir, "compose.yml")
	os.WriteFile(compose, []byte("services: {}\n"), 0o644)
	img := newTestImage(3, nil, 4000, 100)
	layout := filepath.Join(dir, "layout")
	img.ociLayout(t, layout, "1.0.0") // a bare tag: only REF=PATH can name it
	out := filepath.Join(dir, "b.outpost")
	opts := BuildOptions{
		Appliance: "x", ComposeFiles: []string{compose},
		Images:  []ImageRef{{Ref: "registry.example.com/x/web:1.0.0", Services: []string{"web"}}, {Ref: "redis:7", Services: []string{"cache"}}},
		Sources: []string{layout}, SignKey: testKey(1), Output: out,
	}
	_, err := Build(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "registry.example.com/x/web:1.0.0 (services web)") || !strings.Contains(err.Error(), "redis:7 (services cache)") {
		t.Fatalf("missing images not all reported: %v", err)
	}
	opts.Sources = []string{"registry.example.com/x/web:1.0.0=" + layout}
	opts.Images = opts.Images[:1]
	res, err := Build(context.Background(), opts)
	if err != nil {
		t.Fatalf("Build from OCI layout: %v", err)
	}
	got := res.Manifest.Images[0]
	if got.ID != img.id || got.Layers[0].Size != int64(len(img.layers[0])) {
		t.Fatalf("image from layout: %+v", got)
	}
	eng := newFakeEngine(t)
	if _, err := Load(context.Background(), out, LoadOptions{Trust: testTrust(1), Engine: eng}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(eng.images[img.id].layers, img.layers) {
		t.Fatal("gzip layers not decompressed to the originals")
	}
}

func TestBuildRefusesBadInputs(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a", "compose.yml")
	b := filepath.Join(dir, "b", "compose.yml")
	for _, p := range []string{a, b} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("services: {}\n"), 0o644)
	}
	_, err := Build(context.Background(), BuildOptions{Appliance: "x", ComposeFiles: []string{a, b}, SignKey: testKey(1), Output: filepath.Join(dir, "o")})
	if err == nil || !strings.Contains(err.Error(), "same file name") {
		t.Fatalf("duplicate base names: %v", err)
	}
	_, err = Build(context.Background(), BuildOptions{Appliance: "x", ComposeFiles: []string{a}, Output: filepath.Join(dir, "o")})
	if err == nil || !strings.Contains(err.Error(), "keygen") {
		t.Fatalf("no key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "o")); !os.IsNotExist(err) {
		t.Fatal("output written on failure")
	}
}

func TestSafeName(t *testing.T) {
	good := []string{"app/compose.yml", "app/.env", "app/.env.example", "bin/outpost", "images/" + strings.Repeat("a", 64) + ".tar", "app/docker-compose.override.yml"}
	bad := []string{"", "../x", "app/../x", "/app/x", "app/", "app", "app/..", "app/.", "app/x/y", "etc/passwd", `app\x`, "app/./x", "app//x", "app/x\x00"}
	for _, n := range good {
		if err := SafeName(n); err != nil {
			t.Errorf("SafeName(%q) = %v", n, err)
		}
	}
	for _, n := range bad {
		if err := SafeName(n); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("SafeName(%q) = %v, want ErrUnsafePath", n, err)
		}
	}
}

func TestNormalizeRefAndTagKind(t *testing.T) {
	for in, want := range map[string]string{
		"postgres":                           "docker.io/library/postgres:latest",
		"postgres:16":                        "docker.io/library/postgres:16",
		"docker.io/library/postgres:16":      "docker.io/library/postgres:16",
		"openaleph/aleph:5":                  "docker.io/openaleph/aleph:5",
		"ghcr.io/openaleph/openaleph:v1.2.3": "ghcr.io/openaleph/openaleph:v1.2.3",
		"localhost/outpost-demo":             "localhost/outpost-demo:latest",
		"localhost:5000/x/y:2":               "localhost:5000/x/y:2",
		"ghcr.io/x/y@sha256:abc":             "ghcr.io/x/y@sha256:abc",
	} {
		if got := NormalizeRef(in); got != want {
			t.Errorf("NormalizeRef(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"ghcr.io/openaleph/openaleph:latest":      "latest",
		"ghcr.io/openaleph/openaleph:v1.2.3":      "semver",
		"ghcr.io/openaleph/openaleph:5.0.1-rc1":   "semver",
		"ghcr.io/openaleph/openaleph:sha-abc1234": "sha",
		"ghcr.io/openaleph/openaleph:main":        "branch",
		"ghcr.io/openaleph/openaleph:feature-x":   "branch",
		"docker.io/library/postgres:16":           "semver",
	} {
		if got := TagKind(in); got != want {
			t.Errorf("TagKind(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestManifestValidate(t *testing.T) {
	fx := buildFixture(t)
	good := *fx.res.Manifest
	cases := map[string]func(m *Manifest){
		"format":      func(m *Manifest) { m.Format = "outpost-bundle/v2" },
		"no compose":  func(m *Manifest) { m.ComposeFiles = nil },
		"bad sha":     func(m *Manifest) { m.Entries[0].SHA256 = "xyz" },
		"dup entry":   func(m *Manifest) { m.Entries = append(m.Entries, m.Entries[0]) },
		"kind dir":    func(m *Manifest) { m.Entries[0].Kind = KindOutpost },
		"image id":    func(m *Manifest) { m.Images[0].ID = "sha256:00" },
		"unpacked":    func(m *Manifest) { m.Images[0].UnpackedSize++ },
		"no refs":     func(m *Manifest) { m.Images[0].Refs = nil },
		"bad ref":     func(m *Manifest) { m.Images[0].Refs = []string{"UPPER/x:1"} },
		"shared ref":  func(m *Manifest) { m.Images[1].Refs = m.Images[0].Refs },
		"orphan img":  func(m *Manifest) { m.Images = m.Images[:1] },
		"negative":    func(m *Manifest) { m.Entries[1].Size = -1 },
		"traversal":   func(m *Manifest) { m.Entries[0].Name = "app/../../x" },
		"compose ref": func(m *Manifest) { m.ComposeFiles = []string{"bin/outpost"} },
	}
	for name, mut := range cases {
		m := good
		m.Entries = append([]Entry(nil), good.Entries...)
		m.Images = append([]Image(nil), good.Images...)
		mut(&m)
		if err := m.Validate(); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestChanPipeAbort(t *testing.T) {
	p := newChanPipe(2)
	go func() {
		_ = p.write([]byte("hello"))
		p.closeWrite(errors.New("boom"))
	}()
	buf := make([]byte, 10)
	var err error
	for err == nil {
		_, err = p.Read(buf)
	}
	if err.Error() != "boom" {
		t.Fatalf("reader got %v", err)
	}
}

// In the default (pipelined) mode the first image is imported as soon as
// it verifies; when the second turns out damaged, the first is removed
// again.
func TestLoadPipelinedRollsBackEarlierImages(t *testing.T) {
	fx := buildFixture(t)
	es := readBundleTar(t, fx.path)
	last := len(es) - 1
	if !strings.HasPrefix(es[last].hdr.Name, "images/") || !strings.HasPrefix(es[last-1].hdr.Name, "images/") {
		t.Fatalf("fixture layout changed: %s %s", es[last-1].hdr.Name, es[last].hdr.Name)
	}
	es[last].data[len(es[last].data)/3] ^= 0x80
	p := filepath.Join(t.TempDir(), "bad.outpost")
	writeBundleTar(t, p, es)
	eng := newFakeEngine(t)
	old := newTestImage(5, fx.res.Manifest.Images[0].Refs, 10)
	eng.add(old)
	before := eng.state()
	_, err := Load(context.Background(), p, LoadOptions{Trust: testTrust(1), Engine: eng})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), es[last].hdr.Name) {
		t.Fatalf("Load: %v", err)
	}
	if eng.loads != 1 {
		t.Fatalf("the verified first image should have been imported before the failure (loads %d)", eng.loads)
	}
	if after := eng.state(); after != before {
		t.Fatalf("not rolled back:\nbefore %s\nafter  %s", before, after)
	}
}
