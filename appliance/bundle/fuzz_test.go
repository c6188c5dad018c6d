package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// smallBundleTar builds a small bundle (Compose file, env file, one tiny
// image) and returns its uncompressed tar stream.
func smallBundleTar(f *testing.F) []byte {
	dir := f.TempDir()
	compose := filepath.Join(dir, "compose.yml")
	env := filepath.Join(dir, "app.env")
	os.WriteFile(compose, []byte("services:\n  web:\n    image: localhost/web:1\n"), 0o644)
	os.WriteFile(env, []byte("A=1\n"), 0o644)
	img := newTestImage(4, []string{"localhost/web:1"}, 600)
	arch := filepath.Join(dir, "web.tar")
	os.WriteFile(arch, img.dockerArchive(), 0o644)
	out := filepath.Join(dir, "small.outpost")
	if _, err := Build(context.Background(), BuildOptions{
		Appliance: "small", ComposeFiles: []string{compose}, EnvFiles: []string{env},
		Images:  []ImageRef{{Ref: "localhost/web:1", Services: []string{"web"}}},
		Sources: []string{arch}, SignKey: testKey(1), Output: out,
	}); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		f.Fatal(err)
	}
	zr, _ := zstd.NewReader(bytes.NewReader(b))
	defer zr.Close()
	raw, err := io.ReadAll(zr)
	if err != nil {
		f.Fatal(err)
	}
	return raw
}

// FuzzReader feeds arbitrary tar streams to the bundle reader (signature
// check off, so the fuzzer reaches the entry logic). Whatever the input,
// the reader must not panic, must not hand out an entry that is not in
// the manifest or has an unsafe name, and may only report an entry
// verified when its bytes hash to the manifest's sha256.
func FuzzReader(f *testing.F) {
	good := smallBundleTar(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:1024])
	f.Add([]byte{})
	// A "../" entry appended, and a symlink.
	var extra bytes.Buffer
	tw := tar.NewWriter(&extra)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../x", Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "app/l", Linkname: "/etc"})
	tw.Close()
	f.Add(append(append([]byte(nil), good[:len(good)-1024]...), extra.Bytes()...))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/3] ^= 0xff
	f.Add(flipped)

	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := newTarReader(bytes.NewReader(data), ReaderOptions{SkipSignature: true})
		if err != nil {
			return
		}
		m := r.Manifest()
		if err := m.Validate(); err != nil {
			t.Fatalf("reader accepted an invalid manifest: %v", err)
		}
		for {
			e, err := r.Next()
			if err != nil {
				return
			}
			if err := SafeName(e.Entry.Name); err != nil {
				t.Fatalf("unsafe entry handed out: %v", err)
			}
			if _, ok := m.Entry(e.Entry.Name); !ok {
				t.Fatalf("entry %q not in manifest handed out", e.Entry.Name)
			}
			h := sha256.New()
			_, err = io.Copy(h, e)
			if err == nil {
				if !e.Verified() || hex.EncodeToString(h.Sum(nil)) != e.Entry.SHA256 {
					t.Fatalf("entry %s reported complete without matching", e.Entry.Name)
				}
			}
		}
	})
}

// FuzzManifest checks ParseManifest never panics and that what it accepts
// survives a round trip through Marshal.
func FuzzManifest(f *testing.F) {
	good := smallBundleTar(f)
	tr := tar.NewReader(bytes.NewReader(good))
	if _, err := tr.Next(); err != nil {
		f.Fatal(err)
	}
	man, _ := io.ReadAll(tr)
	f.Add(man)
	f.Add([]byte(`{"format":"outpost-bundle/v1"}`))
	f.Add([]byte(`{"format":"outpost-bundle/v1","appliance":"a","compose_files":["app/c.yml"],"entries":[{"name":"app/../c.yml","kind":"compose","size":1,"sha256":"00"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(b)
		if err != nil {
			t.Fatalf("re-parsing a marshalled manifest: %v", err)
		}
		b2, _ := m2.Marshal()
		if !bytes.Equal(b, b2) {
			t.Fatal("marshal is not stable")
		}
	})
}
