//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExportKubePlaysOnPodman exports the demo appliance for `podman kube
// play` and plays it on real rootless Podman without Outpost: the four
// pods find each other by their Compose names (web → api → store), the
// web front answers on its published port, and the store's data is on the
// claimed volume.
func TestExportKubePlaysOnPodman(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	name := "kx" + uniq()
	webPort := ports(1)[0]
	f := h.write("demo.yml", demoDefinition(t,
		"name: outpost-demo", "name: "+name,
		"${OUTPOST_DEMO_WEB_PORT:-18000}", fmt.Sprint(webPort)))
	out := filepath.Join(h.dir, "demo-podman.yaml")

	r := h.must(time.Minute, "export", "kube", "-f", f, "--target", "podman", "-o", out)
	for _, want := range []string{"not carried over: x-outpost.proxy:", "podman kube play --network NET", "wrote " + out} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("export's standard error lacks %q:\n%s", want, r.stderr)
		}
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("export file mode %v, want 0600", st.Mode().Perm())
	}
	manifest, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Pod\n", "name: store\n", "claimName: " + name + "-store-data\n", fmt.Sprintf("hostPort: %d\n", webPort)} {
		if !strings.Contains(string(manifest), want) {
			t.Errorf("manifest lacks %q:\n%s", want, manifest)
		}
	}

	// Pods are named after the services: remove any left by an earlier
	// run that was killed before its cleanup.
	pods := []string{"api", "store", "web", "worker"}
	_ = exec.Command("podman", append([]string{"pod", "rm", "-f"}, pods...)...).Run()
	network := name + "-net"
	podman(t, "network", "create", network)
	t.Cleanup(func() {
		if out, err := exec.Command("podman", "kube", "play", "--down", out).CombinedOutput(); err != nil {
			t.Logf("podman kube play --down: %v\n%s", err, out)
		}
		_ = exec.Command("podman", "volume", "rm", "-f", name+"-store-data").Run()
		_ = exec.Command("podman", "network", "rm", "-f", network).Run()
	})
	podman(t, "kube", "play", "--network", network, out)

	site := fmt.Sprintf("http://127.0.0.1:%d/", webPort)
	eventually(t, 3*time.Minute, "the web front, its api and the store under podman kube play", func() error {
		code, body, err := httpGet(site + "api/hello")
		if err != nil || code != 200 || !strings.Contains(body, `"service": "api"`) || !strings.Contains(body, `"boots": 1`) {
			return fmt.Errorf("%d %v %.300s", code, err, body)
		}
		return nil
	})
	if code, body, err := httpGet(site); err != nil || code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("web front: %d %v %.200s", code, err, body)
	}
	// The store keeps its data on the claimed volume, not in the pod.
	if v := podman(t, "volume", "inspect", "--format", "{{.Name}}", name+"-store-data"); v != name+"-store-data" {
		t.Errorf("claimed volume: %q", v)
	}
	mounts := podman(t, "inspect", "--format", "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}", "store-store")
	if !strings.Contains(mounts, name+"-store-data:/data") {
		t.Errorf("the store does not mount the claimed volume at /data: %s", mounts)
	}
}
