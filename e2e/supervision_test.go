//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

const busyboxImage = "localhost/outpost-e2e-busybox:1"

var busyboxOnce sync.Once

// ensureBusybox imports a one-binary busybox image (from Debian's
// busybox-static, installed by `make setup`) so tests can use a shell.
func ensureBusybox(t *testing.T) {
	t.Helper()
	busyboxOnce.Do(func() {
		if exec.Command("podman", "image", "exists", busyboxImage).Run() == nil {
			return
		}
		data, err := os.ReadFile("/bin/busybox")
		if err != nil {
			t.Fatalf("reading /bin/busybox (apt-get install busybox-static): %v", err)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		dirs := []string{"bin/", "tmp/", "etc/"}
		for _, d := range dirs {
			mode := int64(0o755)
			if d == "tmp/" {
				mode = 0o1777
			}
			_ = tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode})
		}
		_ = tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(data))})
		_, _ = tw.Write(data)
		for _, applet := range []string{"sh", "sleep", "touch", "rm", "test", "[", "cat", "echo", "ls", "timeout", "wget"} {
			_ = tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("podman", "import", "--change", "CMD=[\"sh\"]", "-", busyboxImage)
		cmd.Stdin = &buf
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("podman import busybox: %v\n%s", err, out)
		}
	})
}

const sickCompose = `
name: sick
services:
  app:
    image: ` + busyboxImage + `
    command: ["sh", "-c", "touch /tmp/app-ready; exec sleep 100000"]
    restart: unless-stopped
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD-SHELL", "[ -f /tmp/app-ready ]"]
      interval: 500ms
      timeout: 2s
      retries: 2
`

// A service that turns unhealthy (its Tale-style ready marker disappears)
// is restarted by the daemon and becomes healthy again.
func TestUnhealthyServiceIsRestarted(t *testing.T) {
	ensureBusybox(t)
	h := newHarness(t)
	cleanupAppliance(h, "sick")
	f := h.write("compose.yml", sickCompose)
	d := h.daemon("-f", f)
	waitHealthy := func(what string, check func(serviceState) error) {
		eventually(t, 2*time.Minute, what, func() error {
			if d.exited() {
				t.Fatalf("daemon exited: %v\n%s", d.err, h.logs())
			}
			r := h.run(time.Minute, "status", "--json")
			if r.code != 0 {
				return fmt.Errorf("status: %s", r.stderr)
			}
			s := h.status()
			if err := allHealthy(s, 1); err != nil {
				return err
			}
			return check(s.Services[0])
		})
	}
	waitHealthy("app healthy", func(serviceState) error { return nil })
	podman(t, "exec", "sick-app", "rm", "/tmp/app-ready")
	waitHealthy("app restarted after turning unhealthy", func(s serviceState) error {
		if s.Restarts < 1 {
			return fmt.Errorf("restarts = %d", s.Restarts)
		}
		return nil
	})
	var sawUnhealthy, sawRestart bool
	for _, e := range h.events() {
		sawUnhealthy = sawUnhealthy || (e.Service == "app" && e.Kind == "unhealthy")
		sawRestart = sawRestart || (e.Service == "app" && e.Kind == "restarted")
	}
	if !sawUnhealthy || !sawRestart {
		t.Fatalf("events: unhealthy=%v restarted=%v", sawUnhealthy, sawRestart)
	}
}
