//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// `outpost upgrade --bundle` through the daemon: a tampered bundle is
// refused with nothing changed, a dry run loads nothing, and the upgrade
// loads the missing image and serves the bundle's revision.
func TestUpgradeFromBundle(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	a.file("v1.yml", "1", "v1", "", "10s")
	a.file("v2.yml", "2", "v2", "", "10s")
	repo := "localhost/outpost-e2e-upg-" + a.suffix + "/app"
	id1 := "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", repo+":1")
	id2 := "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", repo+":2")
	h.must(time.Minute, "bundle", "keygen", "-o", "vendor")
	for _, v := range []string{"v1", "v2"} {
		h.must(5*time.Minute, "bundle", "build", "-f", v+".yml", "-o", v+".outpost", "--sign-key", "vendor.key", "--no-outpost-bin")
	}
	// The host has only what v1 needs.
	podman(t, "rmi", repo+":2")

	h.must(10*time.Minute, "up", "--bundle", "v1.outpost", "--pubkey", "vendor.pub")
	d := h.daemon("--name", a.name)
	url := fmt.Sprintf("http://127.0.0.1:%d/api/hello", a.port)
	serves := func(greeting string) {
		t.Helper()
		eventually(t, 3*time.Minute, "greeting "+greeting+" through the proxy", func() error {
			if d.exited() {
				t.Fatalf("daemon exited:\n%s", h.logs())
			}
			code, body, err := httpGet(url)
			if err != nil || code != 200 || !strings.Contains(body, "greeting "+greeting) {
				return fmt.Errorf("%d %v %s", code, err, body)
			}
			return nil
		})
	}
	runs := func(api string) {
		t.Helper()
		got := podman(t, "ps", "-a", "--filter", "label=io.outpost.appliance="+a.name, "--format", "{{.Names}}")
		if want := a.name + "-api\n" + a.name + "-store"; strings.Join(sorted(lines(got)), "\n") != want {
			t.Fatalf("containers:\n%s\nwant:\n%s", got, want)
		}
		for svc, id := range map[string]string{"store": id1, "api": api} {
			if got := "sha256:" + podman(t, "inspect", "--format", "{{.Image}}", a.name+"-"+svc); got != id {
				t.Fatalf("%s runs image %s, want %s", svc, got, id)
			}
		}
	}
	serves("v1")
	runs(id1)
	ids := podman(t, "ps", "-a", "-q", "--no-trunc", "--filter", "label=io.outpost.appliance="+a.name)

	// One flipped bit in the new image's archive: refused, nothing changed.
	ms := readBundle(t, filepath.Join(h.dir, "v2.outpost"))
	entry := "images/" + strings.TrimPrefix(id2, "sha256:") + ".tar"
	i := memberIndex(t, ms, entry)
	ms[i].data[len(ms[i].data)/2] ^= 0x01
	writeBundle(t, filepath.Join(h.dir, "bad.outpost"), ms)
	r := h.run(5*time.Minute, "upgrade", "--bundle", "bad.outpost", "--pubkey", "vendor.pub")
	if r.code == 0 || !strings.Contains(r.stderr, "entry "+entry+" has sha256") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Fatalf("tampered bundle: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if imageExists(id2) {
		t.Fatal("the tampered bundle's image was loaded")
	}
	if got := podman(t, "ps", "-a", "-q", "--no-trunc", "--filter", "label=io.outpost.appliance="+a.name); got != ids {
		t.Fatalf("the tampered bundle touched containers: %s, was %s", got, ids)
	}
	if hist := a.history(t); len(hist) != 1 || hist[1] != "active" {
		t.Fatalf("the tampered bundle recorded a revision: %v", hist)
	}
	// Signed by a key the host does not trust: refused too.
	h.must(time.Minute, "bundle", "keygen", "-o", "other")
	r = h.run(5*time.Minute, "upgrade", "--bundle", "v2.outpost", "--pubkey", "other.pub")
	if r.code == 0 || !strings.Contains(r.stderr, "not trusted") || imageExists(id2) {
		t.Fatalf("untrusted bundle: exit %d\n%s", r.code, r.stderr)
	}

	// For an appliance not deployed here: refused before loading.
	r = h.run(5*time.Minute, "upgrade", "--bundle", "v2.outpost", "--pubkey", "vendor.pub", "--name", "nosuch"+a.suffix)
	if r.code == 0 || !strings.Contains(r.stderr, "has no active revision here") || imageExists(id2) {
		t.Fatalf("bundle for an appliance not deployed: exit %d\n%s", r.code, r.stderr)
	}

	// A dry run verifies and plans, and loads nothing.
	r = h.must(5*time.Minute, "upgrade", "--bundle", "v2.outpost", "--pubkey", "vendor.pub", "--dry-run")
	for _, want := range []string{"rotate   api", "keep     store", "dry run: nothing was changed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s\n%s", want, r.stdout, r.stderr)
		}
	}
	if imageExists(id2) {
		t.Fatal("the dry run loaded an image")
	}

	// The upgrade: the missing image is loaded, the present one skipped,
	// the api rotated through the daemon's proxy.
	r = h.must(10*time.Minute, "upgrade", "--bundle", "v2.outpost", "--pubkey", "vendor.pub")
	t.Logf("upgrade --bundle:\n%s\n%s", r.stdout, r.stderr)
	for _, want := range []string{"1 loaded, 1 already present", "proxy switched to the new copy"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("upgrade progress lacks %q", want)
		}
	}
	if !strings.Contains(r.stdout, "revision 1 → 2") {
		t.Errorf("upgrade output: %s", r.stdout)
	}
	serves("v2")
	runs(id2)
	if hist := a.history(t); hist[1] != "superseded" || hist[2] != "active" {
		t.Fatalf("history %v, want 1 superseded and 2 active", hist)
	}
}

func sorted(l []string) []string {
	sort.Strings(l)
	return l
}
