//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/outpostdev/outpost/appliance/bundle"
)

// bundleCompose is a small appliance on two images made offline from the
// demo image; names carry a per-run suffix (%[1]s).
const bundleCompose = `
name: bndl%[1]s
x-outpost:
  version: "1.2.0"
services:
  store:
    image: localhost/outpost-e2e-bundle-%[1]s/app:1.2.0
    command: ["store"]
    environment:
      INIT_DELAY: ${STORE_INIT_DELAY:-1s}
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:7000/health", "--file", "/tmp/store-ready"]
      interval: 1s
  api:
    image: localhost/outpost-e2e-bundle-%[1]s/app:1.2.0
    command: ["api"]
    environment:
      STORE_URL: http://store:7000
    depends_on:
      store:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 1s
  worker:
    image: localhost/outpost-e2e-bundle-%[1]s/worker:1.2.0
    command: ["worker"]
    environment:
      API_URL: http://api:8080
      INTERVAL: 1s
      HEARTBEAT_FILE: /tmp/hb
    depends_on:
      api:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--max-age", "/tmp/hb=10s"]
      interval: 1s
`

func bundleSuffix(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// buildTestImage makes an image offline: the demo image plus a marker
// file and OCI labels, so its ID is unique to this run.
func buildTestImage(t *testing.T, dir, tag, marker string, extraTags ...string) string {
	t.Helper()
	ctx := filepath.Join(dir, "ctx-"+marker)
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	cf := "FROM localhost/outpost-demo:latest\n" +
		"LABEL org.opencontainers.image.version=1.2.0 org.opencontainers.image.source=https://example.com/outpost-e2e org.opencontainers.image.revision=abc1234\n" +
		"COPY marker /marker\n"
	os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(cf), 0o644)
	os.WriteFile(filepath.Join(ctx, "marker"), []byte(marker+"\n"), 0o644)
	podman(t, "build", "--pull=never", "--format", "docker", "-q", "-t", tag, ctx)
	for _, x := range extraTags {
		podman(t, "tag", tag, x)
	}
	return "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", tag)
}

// imageExists reports whether podman has ref (a name or ID).
func imageExists(ref string) bool {
	return exec.Command("podman", "image", "exists", ref).Run() == nil
}

// imagesUnder lists "ID name" for images whose names start with prefix,
// sorted: what a failed load must leave unchanged.
func imagesUnder(t *testing.T, prefix string) string {
	t.Helper()
	// `podman images` fails with "image not known" when another Podman
	// client on the host removes an image while it lists; list again.
	var listing []byte
	var err error
	for try := 0; try < 10; try++ {
		listing, err = exec.Command("podman", "images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").CombinedOutput()
		if err == nil || !strings.Contains(string(listing), "image not known") {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("podman images: %v\n%s", err, listing)
	}
	var out []string
	for _, l := range lines(string(listing)) {
		if strings.Contains(l, prefix) {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// bundleMember is one tar member of a bundle, for tampering.
type bundleMember struct {
	hdr  tar.Header
	data []byte
}

func readBundle(t *testing.T, path string) []bundleMember {
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
	var out []bundleMember
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
		out = append(out, bundleMember{hdr: *hdr, data: b})
	}
}

func writeBundle(t *testing.T, path string, ms []bundleMember) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := m.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw, _ := zstd.NewWriter(nil)
	if err := os.WriteFile(path, zw.EncodeAll(buf.Bytes(), nil), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyMembers(ms []bundleMember) []bundleMember {
	out := make([]bundleMember, len(ms))
	for i, m := range ms {
		out[i] = bundleMember{hdr: m.hdr, data: append([]byte(nil), m.data...)}
	}
	return out
}

func memberIndex(t *testing.T, ms []bundleMember, prefix string) int {
	t.Helper()
	for i, m := range ms {
		if strings.HasPrefix(m.hdr.Name, prefix) {
			return i
		}
	}
	t.Fatalf("no bundle member %s*", prefix)
	return -1
}

type inspectJSON struct {
	KeyID    string `json:"key_id"`
	Manifest struct {
		Appliance string
		Version   string
		Images    []struct {
			Entry    string
			ID       string
			Refs     []string
			Services []string
			Labels   map[string]string
		}
	}
}

// netnsCommand runs outpost inside a new network namespace that has only
// a loopback device, which is down: no route anywhere. `podman unshare`
// gives the unprivileged user the capability to make one, inside the same
// user namespace its rootless Podman uses, so Podman still finds its
// storage.
func (h *harness) runNoNetwork(timeout time.Duration, args ...string) result {
	h.t.Helper()
	return h.runWith(timeout, append([]string{"podman", "unshare", "unshare", "-n", bin}, args...)...)
}

// runWith runs an arbitrary command line in the harness environment.
func (h *harness) runWith(timeout time.Duration, argv ...string) result {
	h.t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = h.dir
	cmd.Env = h.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		h.t.Fatalf("starting %v: %v", argv, err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		h.t.Fatalf("%v did not finish within %s\nstderr:\n%s", argv, timeout, errb.String())
	}
	res := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("running %v: %v", argv, err)
	}
	return res
}

// A bundle built from images made offline verifies, refuses every kind of
// damage without changing anything, loads into Podman in a network
// namespace with no route out, and brings the appliance up pinned to the
// bundle's image IDs.
func TestBundleAirGap(t *testing.T) {
	h := newHarness(t)
	u := bundleSuffix(t)
	repo := "localhost/outpost-e2e-bundle-" + u
	appName := "bndl" + u
	h.must(10*time.Minute, "demo-image")

	appID := buildTestImage(t, h.dir, repo+"/app:1.2.0", "app-"+u, repo+"/app:sha-abc1234")
	workerID := buildTestImage(t, h.dir, repo+"/worker:1.2.0", "worker-"+u)
	t.Cleanup(func() {
		for _, ref := range []string{repo + "/app:1.2.0", repo + "/app:sha-abc1234", repo + "/worker:1.2.0"} {
			_ = exec.Command("podman", "rmi", "-f", ref).Run()
		}
	})
	compose := h.write("compose.yml", fmt.Sprintf(bundleCompose, u))
	h.write("site.env", "STORE_INIT_DELAY=1s\n")
	h.write("install.sh", "#!/bin/sh\nset -eu\necho install\n")

	// Keys: the vendor's, and a stranger's.
	h.must(time.Minute, "bundle", "keygen", "-o", "vendor")
	h.must(time.Minute, "bundle", "keygen", "-o", "other")

	build := func(out string) result {
		return h.must(5*time.Minute, "bundle", "build", "-f", compose, "--env-file", "site.env",
			"-o", out, "--sign-key", "vendor.key", "--install-script", "install.sh")
	}
	r := build("app.outpost")
	t.Logf("build: %s", r.stdout)
	if !strings.Contains(r.stdout, "2 images") {
		t.Fatalf("build output: %s", r.stdout)
	}
	// Same inputs, same bytes.
	build("again.outpost")
	a, _ := os.ReadFile(filepath.Join(h.dir, "app.outpost"))
	b, _ := os.ReadFile(filepath.Join(h.dir, "again.outpost"))
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same inputs differ")
	}

	r = h.must(3*time.Minute, "bundle", "verify", "app.outpost", "--pubkey", "vendor.pub")
	if !strings.Contains(r.stdout, "OK") {
		t.Fatalf("verify: %s", r.stdout)
	}
	var info inspectJSON
	r = h.must(time.Minute, "bundle", "inspect", "app.outpost", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	ids := map[string]string{}
	for _, img := range info.Manifest.Images {
		ids[img.ID] = strings.Join(img.Refs, " ")
		if img.Labels["org.opencontainers.image.version"] != "1.2.0" {
			t.Fatalf("labels not recorded: %+v", img)
		}
	}
	if !strings.Contains(ids[appID], repo+"/app:sha-abc1234") || !strings.Contains(ids[appID], repo+"/app:1.2.0") || ids[workerID] == "" {
		t.Fatalf("images pinned by ID with all their tags: got %v, want %s and %s", ids, appID, workerID)
	}
	r = h.must(time.Minute, "bundle", "inspect", "app.outpost")
	for _, want := range []string{"(semver)", "(sha)", "version=1.2.0", "revision=abc1234"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("inspect does not show %q:\n%s", want, r.stdout)
		}
	}

	// The customer's host has none of the images.
	podman(t, "rmi", repo+"/app:1.2.0", repo+"/app:sha-abc1234", repo+"/worker:1.2.0")
	if imageExists(appID) || imageExists(workerID) {
		t.Fatal("images still present after rmi")
	}
	before := imagesUnder(t, repo)

	// Every kind of damage is refused with a message naming the entry,
	// and nothing changes.
	orig := readBundle(t, filepath.Join(h.dir, "app.outpost"))
	appEntry := "images/" + strings.TrimPrefix(appID, "sha256:") + ".tar"
	flip := func(prefix string) func(ms []bundleMember) []bundleMember {
		return func(ms []bundleMember) []bundleMember {
			i := memberIndex(t, ms, prefix)
			ms[i].data[len(ms[i].data)/2] ^= 0x01
			return ms
		}
	}
	tampers := []struct {
		name    string
		mutate  func(ms []bundleMember) []bundleMember
		raw     func(b []byte) []byte
		want    string
		extraFl []string
	}{
		{name: "compose", mutate: flip("app/compose.yml"), want: "entry app/compose.yml has sha256"},
		{name: "env", mutate: flip("app/site.env"), want: "entry app/site.env has sha256"},
		{name: "installer", mutate: flip("bin/install.sh"), want: "entry bin/install.sh has sha256"},
		{name: "outpost binary", mutate: flip("bin/outpost"), want: "entry bin/outpost has sha256"},
		{name: "image", mutate: flip(appEntry), want: "entry " + appEntry + " has sha256"},
		{name: "image, verify first", mutate: flip(appEntry), want: "entry " + appEntry + " has sha256", extraFl: []string{"--verify-first"}},
		{name: "last image", mutate: func(ms []bundleMember) []bundleMember {
			ms[len(ms)-1].data[len(ms[len(ms)-1].data)/3] ^= 0x01
			return ms
		}, want: "has sha256"},
		{name: "manifest", mutate: flip("outpost-bundle.json"), want: "modified after signing"},
		{name: "signature swapped", mutate: func(ms []bundleMember) []bundleMember {
			other := readBundleKeySig(t, h, ms)
			ms[1].data = other
			return ms
		}, want: "not trusted"},
		{name: "dotdot entry", mutate: func(ms []bundleMember) []bundleMember {
			evil := bundleMember{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../../evil.sh", Mode: 0o755}, data: []byte("#!/bin/sh\n")}
			return append(ms[:2], append([]bundleMember{evil}, ms[2:]...)...)
		}, want: `"../../evil.sh" climbs out`},
		{name: "symlink", mutate: func(ms []bundleMember) []bundleMember {
			l := bundleMember{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "app/x.yml", Linkname: "../../../etc/passwd"}}
			return append(ms, l)
		}, want: "symbolic link"},
		{name: "unknown entry", mutate: func(ms []bundleMember) []bundleMember {
			return append(ms, bundleMember{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/extra", Mode: 0o755}, data: []byte("x")})
		}, want: "not in the signed manifest"},
		{name: "truncated", raw: func(b []byte) []byte { return b[:len(b)*2/3] }, want: "truncated"},
	}
	for _, tc := range tampers {
		p := "bad-" + strings.ReplaceAll(tc.name, " ", "-") + ".outpost"
		if tc.mutate != nil {
			writeBundle(t, filepath.Join(h.dir, p), tc.mutate(copyMembers(orig)))
		} else {
			os.WriteFile(filepath.Join(h.dir, p), tc.raw(append([]byte(nil), a...)), 0o644)
		}
		for _, verb := range []string{"verify", "load"} {
			args := append([]string{"bundle", verb, p, "--pubkey", "vendor.pub", "-q"}, tc.extraFl...)
			if verb == "verify" && len(tc.extraFl) > 0 {
				continue
			}
			r := h.run(5*time.Minute, args...)
			if r.code == 0 {
				t.Fatalf("%s: bundle %s accepted a damaged bundle:\n%s", tc.name, verb, r.stdout)
			}
			if !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing was changed") {
				t.Fatalf("%s: bundle %s says:\n%s\nwant it to say %q and that nothing was changed", tc.name, verb, r.stderr, tc.want)
			}
			if after := imagesUnder(t, repo); after != before {
				t.Fatalf("%s: bundle %s changed podman's images:\nbefore:\n%s\nafter:\n%s", tc.name, verb, before, after)
			}
			if imageExists(appID) || imageExists(workerID) {
				t.Fatalf("%s: bundle %s left an image behind", tc.name, verb)
			}
		}
		t.Logf("%s: refused", tc.name)
	}

	// Load with no network at all: no route out of the namespace.
	r = h.runNoNetwork(time.Minute, "demo-role", "probe", "--http", "http://192.0.2.1:80/")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "network is unreachable") {
		t.Fatalf("the namespace has a route out: %s%s", r.stdout, r.stderr)
	}
	r = h.runNoNetwork(5*time.Minute, "bundle", "load", "app.outpost", "--pubkey", "vendor.pub")
	if r.code != 0 {
		t.Fatalf("load without network: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("load: %s", r.stdout)
	if !strings.Contains(r.stdout, "2 loaded, 0 already present") {
		t.Fatalf("load output: %s", r.stdout)
	}
	for _, ref := range []string{repo + "/app:1.2.0", repo + "/app:sha-abc1234"} {
		if got := "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", ref); got != appID {
			t.Fatalf("%s is %s after load, want %s", ref, got, appID)
		}
	}
	if got := "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", repo+"/worker:1.2.0"); got != workerID {
		t.Fatalf("worker is %s after load, want %s", got, workerID)
	}
	// Loading again skips both (their bytes are still verified).
	r = h.must(5*time.Minute, "bundle", "load", "app.outpost", "--pubkey", "vendor.pub")
	if !strings.Contains(r.stdout, "0 loaded, 2 already present") {
		t.Fatalf("second load: %s", r.stdout)
	}

	// Up from the bundle, in a fresh directory with no Compose file:
	// services run the bundle's image IDs.
	cleanupAppliance(h, appName)
	r = h.must(10*time.Minute, "up", "--bundle", "app.outpost", "--pubkey", "vendor.pub", "--timeout", "5m")
	if !strings.Contains(r.stdout, appName+" is up") {
		t.Fatalf("up --bundle: %s\n%s", r.stdout, r.stderr)
	}
	for _, c := range []struct{ svc, id string }{{"store", appID}, {"api", appID}, {"worker", workerID}} {
		got := "sha256:" + podman(t, "inspect", "--format", "{{.Image}}", appName+"-"+c.svc)
		if got != c.id {
			t.Fatalf("%s runs image %s, want the bundle's %s", c.svc, got, c.id)
		}
	}
	if err := allHealthy(h.status("--name", appName), 3); err != nil {
		t.Fatal(err)
	}
}

// readBundleKeySig signs the bundle's manifest with the "other" key, as
// a stranger would.
func readBundleKeySig(t *testing.T, h *harness, ms []bundleMember) []byte {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(h.dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := bundle.Sign(ms[0].data, key)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// bundle build makes the vendor's own image from a multi-stage
// Containerfile through the Podman API (no pull: the base is local), with
// build arguments, tags it by the git ref of its source tree and bundles
// it pinned by ID.
func TestBundleBuildFromContainerfile(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	h := newHarness(t)
	u := bundleSuffix(t)
	repo := "localhost/outpost-e2e-build-" + u + "/app"
	h.must(10*time.Minute, "demo-image")
	src := filepath.Join(h.dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "Containerfile"), []byte(`ARG VERSION=dev
FROM localhost/outpost-demo:latest AS base

FROM scratch
ARG VERSION
ARG INSTALL_CJK_FONTS=false
COPY --from=base /outpost /outpost
COPY --from=base /etc/passwd /etc/group /etc/
LABEL org.opencontainers.image.title=e2e-build cjk=${INSTALL_CJK_FONTS} built.version=${VERSION}
USER 1000:1000
ENTRYPOINT ["/outpost", "demo-role"]
CMD ["sleep"]
`), 0o644)
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", src, "-c", "user.name=e2e", "-c", "user.email=e2e@example.com"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	git("add", "-A")
	git("commit", "-qm", "release")
	git("tag", "v1.3.0")
	commit := git("rev-parse", "HEAD")
	compose := h.write("compose.yml", fmt.Sprintf("name: bld%s\nservices:\n  app:\n    image: %s:1.3.0\n", u, repo))
	h.must(time.Minute, "bundle", "keygen", "-o", "vendor")
	tags := []string{repo + ":1.3.0", repo + ":main", repo + ":sha-" + commit[:7], repo + ":v1.3.0"}
	t.Cleanup(func() {
		for _, ref := range tags {
			_ = exec.Command("podman", "rmi", "-f", ref).Run()
		}
	})
	h.must(10*time.Minute, "bundle", "build", "-f", compose, "-o", "b.outpost", "--sign-key", "vendor.key", "--no-outpost-bin",
		"--build", repo+":1.3.0="+src, "--build-arg", "INSTALL_CJK_FONTS=true", "--git-tags")
	var info inspectJSON
	r := h.must(time.Minute, "bundle", "inspect", "b.outpost", "--json", "--pubkey", "vendor.pub")
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Manifest.Images) != 1 {
		t.Fatalf("images: %+v", info.Manifest.Images)
	}
	img := info.Manifest.Images[0]
	if strings.Join(img.Refs, " ") != strings.Join(tags, " ") {
		t.Fatalf("refs %v, want %v", img.Refs, tags)
	}
	for k, want := range map[string]string{
		"cjk": "true", "built.version": "v1.3.0",
		"org.opencontainers.image.version": "v1.3.0", "org.opencontainers.image.revision": commit,
	} {
		if img.Labels[k] != want {
			t.Fatalf("label %s = %q, want %q (labels %v)", k, img.Labels[k], want, img.Labels)
		}
	}
	if got := "sha256:" + podman(t, "image", "inspect", "--format", "{{.Id}}", repo+":v1.3.0"); got != img.ID {
		t.Fatalf("bundle pins %s, podman built %s", img.ID, got)
	}
}
