//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	assets "github.com/outpostdev/outpost/embed"
)

// checkReport is the JSON of `outpost check ... --json`.
type checkReport struct {
	Kind    string
	Project string
	Results []struct {
		Subject  string
		Check    string
		Status   string
		Detail   string
		Notes    []string
		Measured map[string]int64
	}
	Summary map[string]int
}

func (r checkReport) find(t *testing.T, subject, check string) (status, text string) {
	t.Helper()
	for _, res := range r.Results {
		if res.Subject == subject && res.Check == check {
			return res.Status, res.Detail + "\n" + strings.Join(res.Notes, "\n")
		}
	}
	t.Fatalf("no %s result for %s in %+v", check, subject, r.Results)
	return "", ""
}

func parseReport(t *testing.T, r result) checkReport {
	t.Helper()
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("decoding the report: %v\nstdout:\n%s\nstderr:\n%s", err, r.stdout, r.stderr)
	}
	return rep
}

// uniq returns a short random suffix so concurrent test runs do not
// collide on names.
func uniq() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// checkJUnit fails unless path holds well-formed JUnit XML with failures.
func checkJUnit(t *testing.T, path string, wantFailures bool) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("JUnit report: %v", err)
	}
	var suites struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("JUnit report is not XML: %v\n%s", err, data)
	}
	if suites.Tests == 0 || (suites.Failures > 0) != wantFailures {
		t.Fatalf("JUnit report: %d tests, %d failures (want failures: %v)", suites.Tests, suites.Failures, wantFailures)
	}
}

// Images built here, offline from the demo image, each with one defect,
// produce the right FAIL; the clean image passes every check.
func TestCheckImages(t *testing.T) {
	h := newHarness(t)
	h.must(5*time.Minute, "demo-image")
	id := uniq()
	ref := func(defect string) string { return fmt.Sprintf("localhost/chk-%s-%s:1", id, defect) }
	defects := map[string]string{
		"clean":     "LABEL org.opencontainers.image.revision=abc123\n",
		"root":      "USER root\n",
		"dotenv":    "COPY .env /app/.env\n",
		"secretenv": "ENV DB_PASSWORD=hunter2\nENV GITHUB_TOKEN=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n",
		"nohealth":  "HEALTHCHECK NONE\n",
		"oversize":  "COPY blob /blob\n",
		"nolabels":  "LABEL org.opencontainers.image.source=\"\"\n",
	}
	ctx := filepath.Join(h.dir, "build")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, ".env"), []byte("STRIPE_KEY=sk_live_0123456789abcdefghijklmn\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 20<<20) // random: gzip cannot shrink it
	_, _ = rand.Read(blob)
	if err := os.WriteFile(filepath.Join(ctx, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	var compose strings.Builder
	compose.WriteString("services:\n")
	for defect, lines := range defects {
		file := filepath.Join(ctx, "Containerfile."+defect)
		if err := os.WriteFile(file, []byte("FROM localhost/outpost-demo:latest\n"+lines), 0o644); err != nil {
			t.Fatal(err)
		}
		// docker format keeps HEALTHCHECK (OCI has no such field); no RUN
		// needed, so the shell-less base is fine; never pull.
		podman(t, "build", "--format", "docker", "--pull=never", "-q", "-f", file, "-t", ref(defect), ctx)
		t.Cleanup(func() { _ = exec.Command("podman", "rmi", "-f", ref(defect)).Run() })
		fmt.Fprintf(&compose, "  %s:\n    image: %s\n", defect, ref(defect))
	}
	// The budgets are the clean image's sizes (its base, the demo image,
	// depends on the binary) plus 10 MB; oversize adds 20 MB that do not
	// compress.
	h.write("compose.yml", compose.String())
	r := h.must(10*time.Minute, "check", "images", "-f", "compose.yml", "--service", "clean", "--json")
	var measured map[string]int64
	for _, res := range parseReport(t, r).Results {
		if res.Check == "size" {
			measured = res.Measured
		}
	}
	if measured["uncompressed_bytes"] <= 0 || measured["compressed_bytes"] <= 0 {
		t.Fatalf("no sizes measured: %s", r.stdout)
	}
	unc, comp := measured["uncompressed_bytes"]/1e6+10, measured["compressed_bytes"]/1e6+10
	fmt.Fprintf(&compose, `x-outpost:
  checks:
    size_budgets: {clean: %[1]dMB, oversize: %[1]dMB}
    compressed_size_budgets: {clean: %[2]dMB, oversize: %[2]dMB}
`, unc, comp)
	h.write("compose.yml", compose.String())
	junit := filepath.Join(h.dir, "images.xml")
	r = h.run(10*time.Minute, "check", "images", "-f", "compose.yml", "--json", "--junit", junit)
	if r.code != 1 {
		t.Fatalf("check images exited %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	rep := parseReport(t, r)
	checkJUnit(t, junit, true)
	for _, check := range []string{"labels", "non-root", "secrets", "healthcheck", "size"} {
		if st, text := rep.find(t, ref("clean"), check); st != "PASS" {
			t.Errorf("clean image %s: %s %s", check, st, text)
		}
	}
	want := []struct{ defect, check, text string }{
		{"root", "non-root", "runs as root"},
		{"dotenv", "secrets", "/app/.env: .env file"},
		{"secretenv", "secrets", "env DB_PASSWORD"},
		{"secretenv", "secrets", "GitHub token"},
		{"nohealth", "healthcheck", "no HEALTHCHECK in the image"},
		{"oversize", "size", "OVER the uncompressed budget"},
		{"oversize", "size", "OVER the compressed budget"},
		{"nolabels", "labels", "org.opencontainers.image.source"},
	}
	for _, w := range want {
		st, text := rep.find(t, ref(w.defect), w.check)
		if st != "FAIL" || !strings.Contains(text, w.text) {
			t.Errorf("%s %s: %s %q, want FAIL with %q", w.defect, w.check, st, text, w.text)
		}
	}
	// Each defect fails only its own check.
	for _, res := range rep.Results {
		if res.Status == "FAIL" {
			found := false
			for _, w := range want {
				found = found || (res.Subject == ref(w.defect) && res.Check == w.check)
			}
			if !found {
				t.Errorf("unexpected FAIL: %s %s: %s", res.Subject, res.Check, res.Detail)
			}
		}
	}

	// The table is the default output; one clean image passes.
	r = h.run(10*time.Minute, "check", "images", "-f", "compose.yml", "--service", "clean")
	if r.code != 0 || !strings.Contains(r.stdout, "passed") {
		t.Fatalf("clean image alone: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// ports picks a block of free-looking high ports for one test.
func ports(n int) []int {
	base := 30000 + 10*mrand.IntN(270)
	out := make([]int, n)
	for i := range out {
		out[i] = base + i
	}
	return out
}

// The smoke test of the demo appliance passes beside a running production
// copy without touching it; a broken inter-service link and a missing ready
// marker fail naming the service.
func TestCheckSmoke(t *testing.T) {
	h := newHarness(t)
	h.must(5*time.Minute, "demo-image")
	demo, err := assets.FS.ReadFile(assets.DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	h.write("compose.yml", string(demo))
	prod := "chkprod" + uniq()
	p := ports(6)
	prodWeb, smokeWeb, smokeHTTPS, smokeHealth, prodHTTPS, prodHealth := p[0], p[1], p[2], p[3], p[4], p[5]
	cleanupAppliance(h, prod)

	// Production: the demo under its own name, with data in its volume.
	h.write("prod.yml", fmt.Sprintf(`services:
  web:
    ports: !override ["127.0.0.1:%d:3000"]
x-outpost:
  proxy:
    sites: !override ["https://localhost:%d"]
    health_listen: "127.0.0.1:%d"
`, prodWeb, prodHTTPS, prodHealth))
	h.must(10*time.Minute, "up", "-f", "compose.yml", "-f", "prod.yml", "--name", prod)
	prodURL := fmt.Sprintf("http://127.0.0.1:%d", prodWeb)
	resp, err := http.Post(prodURL+"/api/notes", "text/plain", strings.NewReader("production data"))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("writing a note to production: %v %v", resp, err)
	}
	resp.Body.Close()
	prodVolume := prod + "_store-data"
	volID := podman(t, "volume", "inspect", "--format", "{{.Name}} {{.CreatedAt}}", prodVolume)

	// The test profile: shifted ports, the proxy on its own addresses, and
	// the checks (direct, through the proxy with TLS, from inside).
	h.write("smoke.yml", fmt.Sprintf(`services:
  web:
    ports: !override ["127.0.0.1:%[1]d:3000"]
x-outpost:
  proxy:
    sites: !override ["https://localhost:%[2]d"]
    health_listen: "127.0.0.1:%[3]d"
  checks:
    health_budgets: {store: 60s}
    smoke:
      - {name: web-home, url: "http://127.0.0.1:%[1]d/", status: 200}
      - {name: hello-direct, url: "http://127.0.0.1:%[1]d/api/hello"}
      - {name: hello-proxy-tls, url: "https://localhost:%[2]d/api/hello", status: 200}
      - {name: web-to-api, from: web, target: "api:8080"}
      - {name: api-to-store, from: api, url: "http://store:7000/health"}
`, smokeWeb, smokeHTTPS, smokeHealth))
	smokeProject := prod + "-smoke"
	junit := filepath.Join(h.dir, "smoke.xml")
	r := h.run(10*time.Minute, "check", "smoke", "-f", "compose.yml", "-f", "smoke.yml", "--name", prod, "--json", "--junit", junit)
	if r.code != 0 {
		t.Fatalf("check smoke exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	rep := parseReport(t, r)
	checkJUnit(t, junit, false)
	if rep.Project != smokeProject {
		t.Fatalf("project %q, want %q", rep.Project, smokeProject)
	}
	for _, c := range []struct{ subject, check string }{
		{"store", "healthy"}, {"api", "healthy"}, {"worker", "healthy"}, {"web", "healthy"},
		{"store", "ready-markers"}, {"proxy", "proxy"},
		{"web-home", "http"}, {"hello-direct", "http"}, {"hello-proxy-tls", "http"},
		{"web-to-api", "connect"}, {"api-to-store", "http"}, {smokeProject, "teardown"},
	} {
		if st, text := rep.find(t, c.subject, c.check); st != "PASS" {
			t.Errorf("%s %s: %s %s", c.subject, c.check, st, text)
		}
	}
	assertSmokeGone := func() {
		t.Helper()
		if c := containersOf(t, smokeProject); len(c) != 0 {
			t.Errorf("smoke containers left: %v", c)
		}
		if v := podman(t, "volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+smokeProject); v != "" {
			t.Errorf("smoke volumes left: %q", v)
		}
		if n := podman(t, "network", "ls", "-q", "--filter", "label=io.outpost.appliance="+smokeProject); n != "" {
			t.Errorf("smoke networks left: %q", n)
		}
	}
	assertProdIntact := func() {
		t.Helper()
		if got := podman(t, "volume", "inspect", "--format", "{{.Name}} {{.CreatedAt}}", prodVolume); got != volID {
			t.Fatalf("production volume changed: %q, was %q", got, volID)
		}
		code, body, err := httpGet(prodURL + "/api/notes")
		if err != nil || code != 200 || !strings.Contains(body, "production data") {
			t.Fatalf("production data after smoke: %d %v %s", code, err, body)
		}
		if err := allHealthy(h.status("--name", prod), 4); err != nil {
			t.Fatalf("production after smoke: %v", err)
		}
	}
	assertSmokeGone()
	assertProdIntact()

	// A broken inter-service link fails, naming the services and showing
	// the target's last log lines.
	h.write("broken.yml", fmt.Sprintf(`services:
  web:
    ports: !override ["127.0.0.1:%d:3000"]
x-outpost:
  proxy:
    sites: !override ["https://localhost:%d"]
    health_listen: "127.0.0.1:%d"
  checks:
    smoke:
      - {name: worker-to-store, from: worker, target: "store:7999"}
`, smokeWeb, smokeHTTPS, smokeHealth))
	r = h.run(10*time.Minute, "check", "smoke", "-f", "compose.yml", "-f", "broken.yml", "--name", prod, "--json")
	if r.code != 1 {
		t.Fatalf("broken link: exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	st, text := parseReport(t, r).find(t, "worker-to-store", "connect")
	if st != "FAIL" || !strings.Contains(text, "store:7999 from worker") || !strings.Contains(text, "last log lines of store") {
		t.Errorf("broken link: %s %s", st, text)
	}
	assertSmokeGone()

	// A ready marker that never appears: the start fails naming the
	// service, with its probe output and last log lines.
	h.write("marker.yml", fmt.Sprintf(`services:
  web:
    ports: !override ["127.0.0.1:%d:3000"]
  worker:
    healthcheck:
      start_period: 1s
    x-outpost:
      ready_markers: [/tmp/never-ready]
x-outpost:
  proxy:
    sites: !override ["https://localhost:%d"]
    health_listen: "127.0.0.1:%d"
`, smokeWeb, smokeHTTPS, smokeHealth))
	r = h.run(10*time.Minute, "check", "smoke", "-f", "compose.yml", "-f", "marker.yml", "--name", prod)
	if r.code != 1 {
		t.Fatalf("missing marker: exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"worker", "healthy", "FAIL", "/tmp/never-ready", "last log lines"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing marker report lacks %q:\n%s", want, r.stdout)
		}
	}
	assertSmokeGone()
	assertProdIntact()
}

// Without trivy or grype, check vuln says how to install one and exits 3.
func TestCheckVulnWithoutScanner(t *testing.T) {
	if _, err := exec.LookPath("trivy"); err == nil {
		t.Skip("trivy is installed")
	}
	if _, err := exec.LookPath("grype"); err == nil {
		t.Skip("grype is installed")
	}
	h := newHarness(t)
	r := h.run(time.Minute, "check", "vuln")
	if r.code != 3 || !strings.Contains(r.stderr, "trivy") || !strings.Contains(r.stderr, "grype") || !strings.Contains(r.stderr, "offline") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
