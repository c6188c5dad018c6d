//go:build systemde2e

// The systemd end-to-end test: `outpost install` under a real systemd.
//
// It runs as root on the host (make systemd-e2e). It boots systemd in a
// rootful Podman container made from a debootstrap root filesystem (built
// once and cached under /var/cache/outpost-e2e, keyed by its package list),
// copies the binary and install.sh in, and installs a three-service
// appliance with install.sh, then the same from a signed bundle. The
// installed daemon uses the host's rootless Podman of the test user through
// a socket mounted into the container (`install --container-host`): the
// containers run on the host, the unit, its user, its files and its daemon
// in the container, which has no network. Rootless Podman nested in it
// needs --privileged and more; docs/operations.md says what was measured.
//
// Environment: OUTPOST_BIN (binary under test), OUTPOST_INSTALL_SH,
// OUTPOST_TEST_USER (the host user whose Podman runs the containers).
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Names are per run (suffixed with the test's pid), so that two runs on one
// host — they share the test user's Podman — do not collide. Set by
// sdSetNames.
var sdApp, sdUnit, sdUser, sdContainer, sdImageTag string

func sdSetNames() {
	id := strconv.Itoa(os.Getpid())
	sdApp = "svce2e-" + id
	sdUnit = "outpost-" + sdApp
	sdUser = sdUnit
	sdContainer = "outpost-systemd-e2e-" + id
	sdImageTag = "localhost/outpost-svc-e2e:" + id
}

const (
	sdCacheDir = "/var/cache/outpost-e2e"
	sdSuite    = "bookworm"
	// sdSockInside is where the host's Podman socket appears in the container.
	sdSockInside = "/run/host-podman/podman.sock"
)

// sdPackages go into the root filesystem; the cache key hashes them.
var sdPackages = []string{"systemd", "systemd-sysv", "dbus", "procps"}

// sdComposeTmpl is the installed appliance: store (slow to become ready,
// with a volume) ← seed (an install job) ← api (gets a generated secret) ←
// web. APP and IMAGE are replaced by sdCompose.
const sdComposeTmpl = `name: APP
x-outpost:
  name: APP
  version: "1.0.0"
  secrets:
    api-token: {generate: hex, length: 16}
  services:
    store: {role: stateful}
    api: {secrets: [api-token]}
  jobs:
    seed:
      service: api
      command: ["job", "seeding", "the", "store"]
      after: [store]
      before: [api]
      when: install
      timeout: 2m
services:
  store:
    image: IMAGE
    command: ["store"]
    environment: {PORT: "7000", DATA_DIR: /data, INIT_DELAY: 5s, READY_MARKER: /tmp/store-ready}
    volumes: [store-data:/data]
    healthcheck:
      test: [CMD, /outpost, demo-role, probe, --http, "http://127.0.0.1:7000/health", --file, /tmp/store-ready]
      interval: 1s
      timeout: 3s
      start_period: 30s
      retries: 3
    stop_grace_period: 10s
  api:
    image: IMAGE
    command: ["api"]
    environment: {PORT: "8080", STORE_URL: "http://store:7000", READY_MARKER: /tmp/api-ready}
    depends_on: {store: {condition: service_healthy}}
    healthcheck:
      test: [CMD, /outpost, demo-role, probe, --http, "http://127.0.0.1:8080/health", --file, /tmp/api-ready]
      interval: 1s
      timeout: 3s
      start_period: 20s
      retries: 3
  web:
    image: IMAGE
    command: ["web"]
    environment: {PORT: "3000", API_URL: "http://api:8080", READY_MARKER: /tmp/web-ready}
    depends_on: {api: {condition: service_healthy}}
    healthcheck:
      test: [CMD, /outpost, demo-role, probe, --http, "http://127.0.0.1:3000/health"]
      interval: 1s
      timeout: 3s
      start_period: 20s
      retries: 3
    stop_grace_period: 5s
volumes:
  store-data: {}
`

func sdCompose() string {
	return strings.NewReplacer("APP", sdApp, "IMAGE", sdImageTag).Replace(sdComposeTmpl)
}

// sdEnv is the test's fixed context.
type sdEnv struct {
	t          *testing.T
	bin        string
	sock       string // host path of the Podman socket
	containerH string // CONTAINER_HOST inside the systemd container
}

// waitingRe matches the Status line of a start in progress.
var waitingRe = regexp.MustCompile(`waiting for [a-z0-9_.-]+ \([0-9]+s\).*[0-9]+/[0-9]+ ready`)

func TestSystemdInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it boots systemd in a rootful Podman container (make systemd-e2e)")
	}
	bin := os.Getenv("OUTPOST_BIN")
	installSh := os.Getenv("OUTPOST_INSTALL_SH")
	if bin == "" || installSh == "" {
		t.Fatal("OUTPOST_BIN and OUTPOST_INSTALL_SH must name the binary and install.sh under test (use `make systemd-e2e`)")
	}
	testUser := os.Getenv("OUTPOST_TEST_USER")
	if testUser == "" {
		testUser = "outpost-test"
	}
	sdSetNames()
	start := time.Now()
	e := &sdEnv{t: t, bin: bin, containerH: "unix://" + sdSockInside}

	image := sdRootfsImage(t)
	t.Logf("systemd image %s ready after %s", image, time.Since(start).Round(time.Second))

	work, err := os.MkdirTemp("", "outpost-systemd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	e.sock = sdHostPodman(t, work, testUser)
	e.cleanupAppliance()

	// The image the appliance runs: the demo image built from this binary,
	// under a tag of the test's own so concurrent demo rebuilds don't move it.
	if out, err := e.hostOutpost("demo-image"); err != nil {
		t.Fatalf("building the demo image: %v\n%s", err, out)
	}
	e.remotePodman("tag", "localhost/outpost-demo:latest", sdImageTag)
	t.Cleanup(func() {
		_ = exec.Command("podman", "--remote", "--url", "unix://"+e.sock, "untag", sdImageTag, sdImageTag).Run()
	})

	dist := filepath.Join(work, "dist")
	sdWriteDist(t, dist, bin, installSh)

	_ = exec.Command("podman", "rm", "-f", "-t", "0", sdContainer).Run()
	sdRun(t, "podman", "run", "-d", "--name", sdContainer, "--systemd=always",
		// No network: everything install needs is in the mounted
		// directory, and Podman is reached through a Unix socket.
		"--network=none",
		// This host's hard limits are below Podman's defaults.
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		"-v", filepath.Dir(e.sock)+":"+filepath.Dir(sdSockInside),
		"-v", dist+":/opt/outpost-dist:ro",
		image, "/sbin/init")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := e.exec("journalctl", "-u", sdUnit, "--no-pager", "-n", "80")
			t.Logf("journal of %s:\n%s", sdUnit, out)
		}
		_ = exec.Command("podman", "rm", "-f", "-t", "0", sdContainer).Run()
	})
	sdEventually(t, time.Minute, "systemd is running", func() error {
		out, _ := e.exec("systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s != "running" && s != "degraded" {
			return fmt.Errorf("is-system-running: %q", s)
		}
		return nil
	})
	t.Logf("systemd booted after %s", time.Since(start).Round(time.Second))

	installArgs := []string{"sh", "/opt/outpost-dist/install.sh", "-f", "/opt/outpost-dist/app/compose.yml", "--container-host", e.containerH}

	// 1. install.sh → outpost install: starts the unit and returns once healthy.
	// While it runs, watch systemd: the unit must be "activating" with
	// progress in StatusText until every service is healthy.
	var observed []string
	installDone := make(chan struct{})
	var installOut string
	var installErr error
	go func() {
		defer close(installDone)
		installOut, installErr = e.exec(installArgs...)
	}()
	for waiting := true; waiting; {
		select {
		case <-installDone:
			waiting = false
		case <-time.After(200 * time.Millisecond):
			if p, err := e.show("ActiveState", "StatusText"); err == nil && p["ActiveState"] != "" {
				s := p["ActiveState"] + " | " + p["StatusText"]
				if len(observed) == 0 || observed[len(observed)-1] != s {
					observed = append(observed, s)
				}
			}
		}
	}
	if installErr != nil {
		t.Fatalf("install.sh: %v\n%s", installErr, installOut)
	}
	t.Logf("install.sh took %s; systemd states seen while starting:\n  %s", time.Since(start).Round(time.Second), strings.Join(observed, "\n  "))
	if !strings.Contains(installOut, "verified /opt/outpost-dist/outpost") || !strings.Contains(installOut, "is installed and healthy") {
		t.Fatalf("install output:\n%s", installOut)
	}
	sawProgress := false
	for _, s := range observed {
		// e.g. "activating | waiting for store (3s); 0/3 ready": which
		// service the start waits on, and for how long.
		if strings.HasPrefix(s, "activating | ") && waitingRe.MatchString(s) {
			sawProgress = true
		}
	}
	if !sawProgress {
		t.Errorf("never saw the unit activating with a \"waiting for SERVICE (Ns)\" STATUS= line; saw %q", observed)
	}

	// 2. The unit as systemd sees it.
	props, err := e.show("ActiveState", "User", "AmbientCapabilities", "Type", "NotifyAccess", "KillMode", "Restart", "MainPID", "NRestarts", "StatusText", "LimitNOFILE")
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"ActiveState": "active", "User": sdUser, "AmbientCapabilities": "cap_net_bind_service",
		"Type": "notify", "NotifyAccess": "main", "KillMode": "mixed", "Restart": "on-failure", "NRestarts": "0",
	} {
		if props[k] != want {
			t.Errorf("systemctl show %s = %q, want %q", k, props[k], want)
		}
	}
	if !strings.Contains(props["StatusText"], "healthy") {
		t.Errorf("StatusText %q after start", props["StatusText"])
	}

	// 3. READY only after health: the unit became active after the last
	// service's healthy event.
	activeAt := e.activeEnter()
	evs := e.events()
	lastHealthy := sdLastEvent(t, evs, "healthy", []string{"store", "api", "web"})
	if activeAt.Before(lastHealthy) {
		t.Errorf("unit active at %s, before the last service was healthy at %s", activeAt.Format(time.RFC3339Nano), lastHealthy.Format(time.RFC3339Nano))
	}
	t.Logf("last service healthy %s, unit active %s (+%s)", lastHealthy.Format(time.RFC3339Nano), activeAt.Format(time.RFC3339Nano), activeAt.Sub(lastHealthy))

	// 4. Files, permissions and the secret reaching the service.
	e.mustExec("test", "-d", "/var/lib/outpost/"+sdApp)
	modes, _ := e.exec("stat", "-c", "%n %a %U:%G", "/var/lib/outpost/"+sdApp, "/etc/outpost/"+sdApp, "/etc/outpost/"+sdApp+"/compose.yml",
		"/var/lib/outpost/"+sdApp+"/secrets/"+sdApp+"/api-token", "/run/outpost/"+sdApp)
	for _, want := range []string{
		"/var/lib/outpost/" + sdApp + " 700 " + sdUser + ":" + sdUser,
		"/etc/outpost/" + sdApp + " 750 root:" + sdUser,
		"/etc/outpost/" + sdApp + "/compose.yml 640 root:" + sdUser,
		"/var/lib/outpost/" + sdApp + "/secrets/" + sdApp + "/api-token 600 " + sdUser + ":" + sdUser,
		"/run/outpost/" + sdApp + " 700 " + sdUser + ":" + sdUser,
	} {
		if !strings.Contains(modes, want) {
			t.Errorf("want %q in:\n%s", want, modes)
		}
	}
	secret := strings.TrimSpace(e.mustExec("cat", "/var/lib/outpost/"+sdApp+"/secrets/"+sdApp+"/api-token"))
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(secret) {
		t.Errorf("secret %q is not 16 bytes of hex", secret)
	}
	if env := e.remotePodman("inspect", sdApp+"-api", "--format", "{{range .Config.Env}}{{println .}}{{end}}"); !strings.Contains(env, "API_TOKEN="+secret+"\n") {
		t.Errorf("api's environment lacks API_TOKEN=<the generated secret>")
	}

	// 4b. The install job ran once, between store and api.
	if n := sdCount(evs, "seed", "job-exited"); n != 1 {
		t.Errorf("install job ran %d times on the first start, want 1", n)
	}
	if sdLastEvent(t, evs, "job-exited", []string{"seed"}).Before(sdLastEvent(t, evs, "healthy", []string{"store"})) ||
		sdLastEvent(t, evs, "started", []string{"api"}).Before(sdLastEvent(t, evs, "job-exited", []string{"seed"})) {
		t.Errorf("order: want store healthy < seed done < api started")
	}

	// 5. A killed daemon is restarted by systemd and the appliance is healthy again.
	oldPID := props["MainPID"]
	e.mustExec("kill", "-9", oldPID)
	sdEventually(t, 2*time.Minute, "the killed daemon is restarted", func() error {
		p, err := e.show("ActiveState", "NRestarts", "MainPID")
		if err != nil {
			return err
		}
		if p["NRestarts"] != "1" || p["ActiveState"] != "active" || p["MainPID"] == oldPID {
			return fmt.Errorf("%v", p)
		}
		return nil
	})
	if st := e.serviceStatus(); !sdAllHealthy(st) {
		t.Errorf("after the restart: %+v", st)
	}

	if n := sdCount(e.events(), "seed", "job-exited"); n != 1 {
		t.Errorf("install job ran %d times after the daemon's restart, want 1", n)
	}

	// 6. Re-running install.sh changes nothing: same daemon, same secret.
	before, _ := e.show("MainPID", "NRestarts")
	out, err := e.exec(installArgs...)
	if err != nil || !strings.Contains(out, "nothing changed") {
		t.Errorf("second install.sh (err %v) did not report nothing changed:\n%s", err, out)
	}
	after, _ := e.show("MainPID", "NRestarts")
	if before["MainPID"] != after["MainPID"] || before["NRestarts"] != after["NRestarts"] {
		t.Errorf("second install restarted the daemon: %v → %v", before, after)
	}
	if s := strings.TrimSpace(e.mustExec("cat", "/var/lib/outpost/"+sdApp+"/secrets/"+sdApp+"/api-token")); s != secret {
		t.Error("second install changed the secret")
	}

	// 6b. A changed definition is applied through the running daemon: only
	// the changed service is recreated, the daemon keeps running.
	ids := func() map[string]string {
		m := map[string]string{}
		for _, svc := range []string{"store", "api", "web"} {
			m[svc] = e.remotePodman("inspect", sdApp+"-"+svc, "--format", "{{.ID}}")
		}
		return m
	}
	idsBefore := ids()
	compose := filepath.Join(dist, "app", "compose.yml")
	sdEdit(t, compose, `API_URL: "http://api:8080", READY_MARKER: /tmp/web-ready}`, `API_URL: "http://api:8080", READY_MARKER: /tmp/web-ready, EXTRA: "1"}`)
	out, err = e.exec(installArgs...)
	if err != nil || !strings.Contains(out, "applying the changed definition") {
		t.Errorf("install with a changed definition (err %v):\n%s", err, out)
	}
	idsAfter := ids()
	if idsAfter["store"] != idsBefore["store"] || idsAfter["api"] != idsBefore["api"] || idsAfter["web"] == idsBefore["web"] {
		t.Errorf("changing web's environment: containers %v → %v; want only web recreated", idsBefore, idsAfter)
	}
	if p, _ := e.show("MainPID"); p["MainPID"] != after["MainPID"] {
		t.Errorf("a definition change restarted the daemon")
	}

	// 6c. A change that changes the unit (a longer stop timeout) replaces the
	// unit and restarts the service.
	sdEdit(t, compose, "stop_grace_period: 10s", "stop_grace_period: 20s")
	out, err = e.exec(installArgs...)
	if err != nil || !strings.Contains(out, "restarting") {
		t.Errorf("install with a changed unit (err %v):\n%s", err, out)
	}
	if unit := e.mustExec("systemctl", "show", "-p", "TimeoutStopUSec", "--value", sdUnit); !strings.Contains(unit, "1min 20s") {
		t.Errorf("TimeoutStopUSec = %q after raising store's grace to 20s, want 1min 20s", strings.TrimSpace(unit))
	}
	if p, _ := e.show("MainPID", "ActiveState"); p["MainPID"] == after["MainPID"] || p["ActiveState"] != "active" {
		t.Errorf("after a unit change: %v (daemon was %s)", p, after["MainPID"])
	}

	// 7. outpost stop stops the containers in reverse dependency order.
	lastID := evs[len(evs)-1].ID
	for _, ev := range e.events() {
		lastID = max(lastID, ev.ID)
	}
	e.mustExec("outpost", "stop", "--name", sdApp)
	if p, _ := e.show("ActiveState", "Result"); p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("after outpost stop: %v", p)
	}
	var stopped []string
	for _, ev := range e.events() {
		if ev.ID > lastID && ev.Kind == "stopped" {
			stopped = append(stopped, ev.Service)
		}
	}
	if strings.Join(stopped, ",") != "web,api,store" {
		t.Errorf("stop order %v, want web,api,store", stopped)
	}
	e.mustExec("outpost", "start", "--name", sdApp)
	if st := e.serviceStatus(); !sdAllHealthy(st) {
		t.Errorf("after outpost start: %+v", st)
	}

	// 8. uninstall removes unit and containers and keeps the data.
	volCreated := e.remotePodman("volume", "inspect", sdApp+"_store-data", "--format", "{{.CreatedAt}}")
	e.mustExec("outpost", "uninstall", "--name", sdApp)
	if p, _ := e.show("LoadState"); p["LoadState"] != "not-found" {
		t.Errorf("unit still known after uninstall: %v", p)
	}
	if names := e.remotePodman("ps", "-a", "--format", "{{.Names}}", "--filter", "label=io.outpost.appliance="+sdApp); names != "" {
		t.Errorf("containers left after uninstall: %s", names)
	}
	if vols := e.remotePodman("volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+sdApp); vols != sdApp+"_store-data" {
		t.Errorf("volumes after uninstall: %q, want the store's volume kept", vols)
	}
	e.mustExec("test", "-s", "/var/lib/outpost/"+sdApp+"/outpost.db")
	e.mustExec("id", sdUser)
	if s := strings.TrimSpace(e.mustExec("cat", "/var/lib/outpost/"+sdApp+"/secrets/"+sdApp+"/api-token")); s != secret {
		t.Error("uninstall changed the secret")
	}

	// 9. Reinstalling brings back the same data and secret.
	e.mustExec("outpost", "install", "-f", "/etc/outpost/"+sdApp+"/compose.yml", "--container-host", e.containerH)
	if got := e.remotePodman("volume", "inspect", sdApp+"_store-data", "--format", "{{.CreatedAt}}"); got != volCreated {
		t.Errorf("the volume was recreated: created %s, before %s", got, volCreated)
	}
	if env := e.remotePodman("inspect", sdApp+"-api", "--format", "{{range .Config.Env}}{{println .}}{{end}}"); !strings.Contains(env, "API_TOKEN="+secret+"\n") {
		t.Error("after reinstall, api does not get the same secret")
	}
	if n := sdCount(e.events(), "seed", "job-exited"); n != 1 {
		t.Errorf("install job ran %d times after uninstall and reinstall, want 1", n)
	}
	// The secret's value is nowhere in the state database (nor its WAL).
	if out, err := e.exec("sh", "-c", "grep -c -F -e '"+secret+"' /var/lib/outpost/"+sdApp+"/outpost.db* || true"); err != nil || strings.Contains(out, ":1") || strings.TrimSpace(out) == "1" {
		t.Errorf("the secret's value is in the state database: %s %v", out, err)
	}

	// 10. --purge refuses without a typed confirmation, then deletes everything.
	if out, err := e.exec("sh", "-c", "outpost uninstall --purge --name "+sdApp+" </dev/null"); err == nil || !strings.Contains(out, "--yes-delete-data="+sdApp) {
		t.Errorf("non-interactive purge without the flag: err %v\n%s", err, out)
	}
	if out, err := e.exec("outpost", "uninstall", "--name", sdApp, "--purge", "--yes-delete-data=other"); err == nil {
		t.Errorf("purge with a wrong name succeeded:\n%s", out)
	}
	if p, _ := e.show("ActiveState"); p["ActiveState"] != "active" {
		t.Errorf("a refused purge changed the service: %v", p)
	}
	e.mustExec("outpost", "uninstall", "--name", sdApp, "--purge", "--yes-delete-data="+sdApp)
	if vols := e.remotePodman("volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+sdApp); vols != "" {
		t.Errorf("volumes after purge: %s", vols)
	}
	if _, err := e.exec("id", sdUser); err == nil {
		t.Error("user still exists after purge")
	}
	if _, err := e.exec("test", "-e", "/var/lib/outpost/"+sdApp); err == nil {
		t.Error("state dir still exists after purge")
	}

	// 11. From a signed bundle, with no network: a tampered copy is
	// refused with nothing installed; the genuine one is installed by the
	// install.sh and binary extracted from it, its image loaded into the
	// (empty of it) storage.
	e.bundleInstall(dist)
	t.Logf("total %s", time.Since(start).Round(time.Second))
}

// bundleInstall builds a bundle on the host of an image the storage then
// loses, and installs it in the container.
func (e *sdEnv) bundleInstall(dist string) {
	t := e.t
	bundleTag := "localhost/outpost-svc-e2e-bundle:" + strconv.Itoa(os.Getpid())
	ctxDir := filepath.Join(dist, "imgctx")
	if err := os.MkdirAll(ctxDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A label of its own gives the image an ID nothing else has.
	if err := os.WriteFile(filepath.Join(ctxDir, "Containerfile"), []byte("FROM "+sdImageTag+"\nLABEL io.outpost.e2e.bundle="+bundleTag+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.remotePodman("build", "-t", bundleTag, ctxDir)
	t.Cleanup(func() {
		_ = exec.Command("podman", "--remote", "--url", "unix://"+e.sock, "rmi", "-f", bundleTag).Run()
	})
	imageID := e.remotePodman("image", "inspect", bundleTag, "--format", "{{.Id}}")
	compose := filepath.Join(dist, "bundle-src", "compose.yml")
	if err := os.MkdirAll(filepath.Dir(compose), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(compose, []byte(strings.ReplaceAll(sdCompose(), sdImageTag, bundleTag)), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dist, "vendor")
	for _, args := range [][]string{
		{"bundle", "keygen", "-o", keys},
		{"bundle", "build", "-q", "-f", compose, "-o", filepath.Join(dist, "app.outpost"), "--sign-key", keys + ".key",
			"--outpost-bin", filepath.Join(dist, "outpost"), "--install-script", filepath.Join(dist, "install.sh")},
		{"bundle", "extract", filepath.Join(dist, "app.outpost"), "--pubkey", keys + ".pub", "-o", filepath.Join(dist, "extracted"), "--what", "outpost,installer"},
	} {
		if out, err := e.hostOutpost(args...); err != nil {
			t.Fatalf("outpost %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	e.remotePodman("rmi", bundleTag)
	if _, err := exec.Command("podman", "--remote", "--url", "unix://"+e.sock, "image", "exists", imageID).CombinedOutput(); err == nil {
		t.Fatalf("image %s still present before the bundle install", imageID)
	}
	data, err := os.ReadFile(filepath.Join(dist, "app.outpost"))
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 0x55
	if err := os.WriteFile(filepath.Join(dist, "tampered.outpost"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dist, filepath.Join(dist, "extracted"), filepath.Join(dist, "extracted", "bin")} {
		_ = os.Chmod(p, 0o755)
	}
	installSh := "/opt/outpost-dist/extracted/bin/install.sh"
	args := func(bundle string) []string {
		return []string{"sh", installSh, "--bundle", "/opt/outpost-dist/" + bundle, "--pubkey", "/opt/outpost-dist/vendor.pub", "--container-host", e.containerH}
	}

	out, err := e.exec(args("tampered.outpost")...)
	if err == nil || !strings.Contains(out, "nothing was installed") {
		t.Fatalf("tampered bundle: err %v\n%s", err, out)
	}
	t.Logf("tampered bundle refused:\n%s", out)
	if p, _ := e.show("LoadState"); p["LoadState"] != "not-found" {
		t.Errorf("a refused bundle left a unit: %v", p)
	}
	if _, err := e.exec("id", sdUser); err == nil {
		t.Error("a refused bundle created the service user")
	}
	for _, d := range []string{"/etc/outpost/" + sdApp, "/var/lib/outpost/" + sdApp} {
		if _, err := e.exec("test", "-e", d); err == nil {
			t.Errorf("a refused bundle created %s", d)
		}
	}
	if _, err := exec.Command("podman", "--remote", "--url", "unix://"+e.sock, "image", "exists", imageID).CombinedOutput(); err == nil {
		t.Error("a refused bundle loaded its image")
	}

	out, err = e.exec(args("app.outpost")...)
	if err != nil || !strings.Contains(out, "verified /opt/outpost-dist/extracted/bin/outpost") || !strings.Contains(out, "is installed and healthy") || !strings.Contains(out, "1 loaded") {
		t.Fatalf("bundle install (err %v):\n%s", err, out)
	}
	t.Logf("bundle install:\n%s", out)
	if got := e.remotePodman("image", "inspect", bundleTag, "--format", "{{.Id}}"); got != imageID {
		t.Errorf("loaded image %s, want %s", got, imageID)
	}
	want, _ := os.ReadFile(compose)
	if got := e.mustExec("cat", "/etc/outpost/"+sdApp+"/compose.yml"); got != string(want) {
		t.Errorf("installed definition differs from the bundle's Compose file:\n%s", got)
	}
	e.mustExec("test", "-s", "/etc/outpost/"+sdApp+"/bundle-keys/"+strings.ReplaceAll(e.keyID(keys+".pub"), ":", "-")+".pub")
	if st := e.serviceStatus(); !sdAllHealthy(st) {
		t.Errorf("after the bundle install: %+v", st)
	}
	if img := e.remotePodman("inspect", sdApp+"-api", "--format", "{{.Image}}"); img != imageID {
		t.Errorf("api runs image %s, want the bundle's %s", img, imageID)
	}
	if n := sdCount(e.events(), "seed", "job-exited"); n != 1 {
		t.Errorf("install job ran %d times on the bundle install, want 1", n)
	}
	// Installing the same bundle again changes nothing and loads nothing.
	out, err = e.exec(args("app.outpost")...)
	if err != nil || !strings.Contains(out, "nothing changed") || !strings.Contains(out, "1 already present") {
		t.Errorf("second bundle install (err %v):\n%s", err, out)
	}
	e.mustExec("outpost", "uninstall", "--name", sdApp, "--purge", "--yes-delete-data="+sdApp)
}

// keyID is the ID of a public key file, as `outpost bundle inspect` names it.
func (e *sdEnv) keyID(pub string) string {
	e.t.Helper()
	out, err := e.hostOutpost("bundle", "verify", "--json", "-q", filepath.Join(filepath.Dir(pub), "app.outpost"), "--pubkey", pub)
	if err != nil {
		e.t.Fatalf("bundle verify: %v\n%s", err, out)
	}
	var v struct {
		KeyID string `json:"key_id"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &v); err != nil || v.KeyID == "" {
		e.t.Fatalf("bundle verify --json: %v\n%s", err, out)
	}
	return v.KeyID
}

// sdCount counts the events of a kind for a service or job.
func sdCount(evs []sdEvent, who, kind string) int {
	n := 0
	for _, ev := range evs {
		if ev.Service == who && ev.Kind == kind {
			n++
		}
	}
	return n
}

// exec runs a command in the systemd container and returns its combined
// output.
func (e *sdEnv) exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", append([]string{"exec", sdContainer}, args...)...).CombinedOutput()
	return string(out), err
}

func (e *sdEnv) mustExec(args ...string) string {
	e.t.Helper()
	out, err := e.exec(args...)
	if err != nil {
		e.t.Fatalf("in the container: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// show reads unit properties with systemctl show.
func (e *sdEnv) show(props ...string) (map[string]string, error) {
	args := []string{"systemctl", "show", sdUnit}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := e.exec(args...)
	if err != nil {
		return nil, fmt.Errorf("systemctl show: %v: %s", err, out)
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// activeEnter is when the unit last became active, to the microsecond.
func (e *sdEnv) activeEnter() time.Time {
	e.t.Helper()
	out := e.mustExec("systemctl", "show", "--timestamp=us+utc", "-p", "ActiveEnterTimestamp", "--value", sdUnit)
	at, err := time.Parse("Mon 2006-01-02 15:04:05.999999 MST", strings.TrimSpace(out))
	if err != nil {
		e.t.Fatalf("parsing ActiveEnterTimestamp %q: %v", out, err)
	}
	return at
}

type sdEvent struct {
	ID      int64     `json:"id"`
	Service string    `json:"service"`
	Kind    string    `json:"kind"`
	At      time.Time `json:"at"`
}

// events reads the appliance's events as the service user.
func (e *sdEnv) events() []sdEvent {
	e.t.Helper()
	out := e.mustExec("runuser", "-u", sdUser, "--", "env",
		"OUTPOST_STATE_DIR=/var/lib/outpost/"+sdApp, "XDG_RUNTIME_DIR=/run/outpost/"+sdApp, "CONTAINER_HOST="+e.containerH,
		"outpost", "events", "--json", "--name", sdApp)
	var evs []sdEvent
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		e.t.Fatalf("decoding events: %v\n%s", err, out)
	}
	return evs
}

type sdStatus struct {
	Service struct {
		ActiveState string `json:"active_state"`
	} `json:"service"`
	Appliance *struct {
		Services []struct {
			Service, State, Health string
		}
	} `json:"appliance"`
}

func (e *sdEnv) serviceStatus() sdStatus {
	e.t.Helper()
	out := e.mustExec("outpost", "service", "status", "--json", "--name", sdApp)
	var st sdStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("decoding service status: %v\n%s", err, out)
	}
	return st
}

func sdAllHealthy(st sdStatus) bool {
	if st.Service.ActiveState != "active" || st.Appliance == nil || len(st.Appliance.Services) != 3 {
		return false
	}
	for _, s := range st.Appliance.Services {
		if s.State != "running" || s.Health != "healthy" {
			return false
		}
	}
	return true
}

func sdLastEvent(t *testing.T, evs []sdEvent, kind string, services []string) time.Time {
	t.Helper()
	var last time.Time
	for _, svc := range services {
		var first time.Time
		for _, ev := range evs {
			if ev.Service == svc && ev.Kind == kind {
				first = ev.At
				break
			}
		}
		if first.IsZero() {
			t.Fatalf("no %s event for %s", kind, svc)
		}
		if first.After(last) {
			last = first
		}
	}
	return last
}

// remotePodman runs the podman CLI against the test user's socket.
func (e *sdEnv) remotePodman(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("podman", append([]string{"--remote", "--url", "unix://" + e.sock}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// hostOutpost runs the binary under test on the host against the socket.
func (e *sdEnv) hostOutpost(args ...string) (string, error) {
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_HOST=unix://"+e.sock)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cleanupAppliance removes the appliance's containers and volumes from the
// test user's Podman before the test and after it.
func (e *sdEnv) cleanupAppliance() {
	clean := func() {
		base := []string{"--remote", "--url", "unix://" + e.sock}
		out, _ := exec.Command("podman", append(base, "ps", "-aq", "--filter", "label=io.outpost.appliance="+sdApp)...).Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("podman", append(base, "rm", "-f", "-t", "0", id)...).Run()
		}
		out, _ = exec.Command("podman", append(base, "volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+sdApp)...).Output()
		for _, v := range strings.Fields(string(out)) {
			_ = exec.Command("podman", append(base, "volume", "rm", "-f", v)...).Run()
		}
		_ = exec.Command("podman", append(base, "network", "rm", "-f", sdApp+"_default")...).Run()
	}
	clean()
	e.t.Cleanup(clean)
}

// sdHostPodman starts `podman system service` as the test user on a socket
// the systemd container can mount, and returns the socket's host path.
func sdHostPodman(t *testing.T, work, testUser string) string {
	t.Helper()
	u, err := user.Lookup(testUser)
	if err != nil {
		t.Fatalf("test user %s: %v (run `make setup`)", testUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := filepath.Join(work, "sock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{work, dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "podman.sock")
	cmd := exec.Command("podman", "system", "service", "--time=0", "unix://"+sock)
	cmd.Env = []string{"HOME=" + u.HomeDir, "USER=" + testUser, "XDG_RUNTIME_DIR=/run/user/" + u.Uid, "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
	var logb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logb, &logb
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting podman system service as %s: %v", testUser, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sdEventually(t, 30*time.Second, "the test user's podman socket", func() error {
		if _, err := os.Stat(sock); err != nil {
			return fmt.Errorf("%v; podman says: %s", err, logb.String())
		}
		// The service user in the container has another UID.
		return os.Chmod(sock, 0o666)
	})
	return sock
}

// sdEdit replaces old by new in a file, once.
func sdEdit(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s does not contain %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(old), []byte(new), 1), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sdWriteDist lays out what a release directory holds: the binary, its
// .sha256, install.sh and the appliance's Compose file.
func sdWriteDist(t *testing.T, dist, bin, installSh string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dist, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	script, err := os.ReadFile(installSh)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"outpost":         {data, 0o755},
		"outpost.sha256":  {[]byte(hex.EncodeToString(sum[:]) + "  outpost\n"), 0o644},
		"install.sh":      {script, 0o755},
		"app/compose.yml": {[]byte(sdCompose()), 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dist, name), f.data, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dist, 0o755); err != nil {
		t.Fatal(err)
	}
}

// sdRootfsImage returns a Podman image (of root's storage) with systemd,
// from a debootstrap root filesystem cached as a tarball under sdCacheDir.
func sdRootfsImage(t *testing.T) string {
	t.Helper()
	mirror := sdMirror()
	h := sha256.Sum256([]byte(sdSuite + "\n" + mirror + "\n" + strings.Join(sdPackages, ",")))
	key := hex.EncodeToString(h[:])[:12]
	image := "localhost/outpost-systemd-e2e:" + key
	if exec.Command("podman", "image", "exists", image).Run() == nil {
		return image
	}
	if err := os.MkdirAll(sdCacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(sdCacheDir, "rootfs-"+key+".tar")
	if _, err := os.Stat(tarball); err != nil {
		if _, err := exec.LookPath("debootstrap"); err != nil {
			t.Fatal("debootstrap is missing: apt-get install debootstrap (make systemd-e2e does)")
		}
		root, err := os.MkdirTemp(sdCacheDir, "rootfs-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(root)
		t.Logf("debootstrap %s from %s (once; cached as %s)", sdSuite, mirror, tarball)
		begin := time.Now()
		sdRun(t, "debootstrap", "--variant=minbase", "--include="+strings.Join(sdPackages, ","), sdSuite, root, mirror)
		t.Logf("debootstrap took %s", time.Since(begin).Round(time.Second))
		tmp := tarball + ".part"
		sdRun(t, "tar", "-C", root, "-cf", tmp, ".")
		if err := os.Rename(tmp, tarball); err != nil {
			t.Fatal(err)
		}
	}
	sdRun(t, "podman", "import", tarball, image)
	return image
}

// sdMirror is the Debian mirror apt uses here, so debootstrap reaches the
// same (possibly local) mirror.
func sdMirror() string {
	if data, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "URIs:"); ok {
				for _, u := range strings.Fields(v) {
					if !strings.Contains(u, "security") {
						return u
					}
				}
			}
		}
	}
	if data, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "deb" && !strings.Contains(f[1], "security") && !strings.HasPrefix(f[1], "[") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

func sdRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func sdEventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}
