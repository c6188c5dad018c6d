package cli

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// install --bundle verifies the whole bundle before anything else: a
// genuine one points the definition at its extracted Compose file and
// yields the signing key; a tampered one is refused, leaving no files.
func TestOpenInstallBundle(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("OUTPOST_BUNDLE_PUBKEY", "")
	t.Setenv("TMPDIR", filepath.Join(dir, "tmp"))
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestArchive(t, filepath.Join(dir, "web.tar"), "localhost/web:1")
	compose := "name: small\nservices:\n  web:\n    image: localhost/web:1\n"
	os.WriteFile("compose.yml", []byte(compose), 0o644)
	for _, args := range [][]string{
		{"bundle", "keygen", "-o", "v"},
		{"bundle", "build", "-q", "-f", "compose.yml", "-o", "s.outpost", "--sign-key", "v.key", "--from", "web.tar", "--no-outpost-bin"},
	} {
		var out, errb bytes.Buffer
		if code := Run(context.Background(), args, Streams{In: strings.NewReader(""), Out: &out, Err: &errb}); code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out.String(), errb.String())
		}
	}
	g := &globals{streams: Streams{Out: io.Discard, Err: io.Discard}}

	o := installOptions{bundle: "s.outpost", trust: trustFlags{pubkeys: []string{"v.pub"}}}
	o.def.files = []string{"override.yml"}
	b, err := openInstallBundle(context.Background(), g, &o)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.def.files) != 2 || o.def.files[1] != "override.yml" {
		t.Fatalf("definition files %v: want the bundle's Compose file, then the -f override", o.def.files)
	}
	if got, err := os.ReadFile(o.def.files[0]); err != nil || string(got) != compose {
		t.Fatalf("extracted Compose file: %q %v", got, err)
	}
	if !bytes.Contains(b.signer, []byte("PUBLIC KEY")) {
		t.Fatalf("signing key not kept: %q", b.signer)
	}
	b.cleanup()
	if _, err := os.Stat(b.tmp); !os.IsNotExist(err) {
		t.Fatalf("cleanup left %s", b.tmp)
	}

	data, _ := os.ReadFile("s.outpost")
	data[len(data)/2] ^= 0x55
	os.WriteFile("bad.outpost", data, 0o644)
	o = installOptions{bundle: "bad.outpost", trust: trustFlags{pubkeys: []string{"v.pub"}}}
	if _, err := openInstallBundle(context.Background(), g, &o); err == nil || !strings.Contains(err.Error(), "nothing was installed") {
		t.Fatalf("tampered bundle: err = %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("a refused bundle left files: %v", left)
	}
	o = installOptions{bundle: "s.outpost", trust: trustFlags{pubkeys: []string{"w.pub"}}}
	os.WriteFile("w.pub", []byte("not a key"), 0o644)
	if _, err := openInstallBundle(context.Background(), g, &o); err == nil {
		t.Fatal("an unusable key was accepted")
	}
}
