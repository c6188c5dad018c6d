//go:build e2e

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
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upgradeCompose is a two-service appliance on images made offline from
// the demo image: a stateful store with a volume and a rotatable api
// behind the embedded proxy (plain HTTP on a per-run port). %[1]s is the
// run's suffix, %[2]s the api image tag, %[3]s its greeting, %[4]d the
// proxy port, %[5]d the proxy health port, %[6]s extra x-outpost keys.
const upgradeCompose = `
name: upg%[1]s
x-outpost:
  version: "%[2]s"
  services:
    store: {role: stateful}
    api: {role: rotatable}
  proxy:
    tls: "off"
    sites: [":%[4]d"]
    health_listen: "127.0.0.1:%[5]d"
    routes:
      - {upstream: "api:8080"}
%[6]s
services:
  store:
    image: localhost/outpost-e2e-upg-%[1]s/app:1
    command: ["store"]
    environment:
      PORT: "7000"
      DATA_DIR: /data
      INIT_DELAY: 1s
      READY_MARKER: /tmp/store-ready
    volumes:
      - store-data:/data
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:7000/health", "--file", "/tmp/store-ready"]
      interval: 1s
      start_period: 30s
    stop_grace_period: 5s
  api:
    image: localhost/outpost-e2e-upg-%[1]s/app:%[2]s
    command: ["api"]
    environment:
      PORT: "8080"
      STORE_URL: http://store:7000
      GREETING: "greeting %[3]s"
    depends_on:
      store:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 1s
      start_period: %[7]s
      retries: 2
    stop_grace_period: 3s
volumes:
  store-data:
`

// upgradeJob runs during upgrades, after the store is healthy.
const upgradeJob = `  jobs:
    migrate:
      service: api
      command: %s
      after: [store]
      when: upgrade
      timeout: 1m
`

// upgradeApp is one test's appliance: its suffix, ports and definitions.
type upgradeApp struct {
	h           *harness
	suffix      string
	name        string
	port, hport int
}

func newUpgradeApp(t *testing.T, h *harness) *upgradeApp {
	t.Helper()
	h.must(10*time.Minute, "demo-image")
	suffix := bundleSuffix(t)
	p := ports(2)
	a := &upgradeApp{h: h, suffix: suffix, name: "upg" + suffix, port: p[0], hport: p[1]}
	buildTestImage(t, h.dir, "localhost/outpost-e2e-upg-"+suffix+"/app:1", "upg1-"+suffix)
	buildTestImage(t, h.dir, "localhost/outpost-e2e-upg-"+suffix+"/app:2", "upg2-"+suffix)
	t.Cleanup(func() {
		out, _ := exec.Command("podman", "images", "--format", "{{.Repository}}:{{.Tag}}").Output()
		for _, l := range lines(string(out)) {
			if strings.Contains(l, "outpost-e2e-upg-"+suffix) {
				_ = exec.Command("podman", "rmi", "-f", l).Run()
			}
		}
	})
	cleanupAppliance(h, a.name)
	return a
}

// file writes a definition: api image tag, greeting, extra x-outpost keys
// and the api's health start period.
func (a *upgradeApp) file(name, tag, greeting, extra, start string) string {
	return a.h.write(name, fmt.Sprintf(upgradeCompose, a.suffix, tag, greeting, a.port, a.hport, extra, start))
}

// containers lists the appliance's containers as "name state image-tag".
func (a *upgradeApp) containers(t *testing.T) []string {
	t.Helper()
	out := podman(t, "ps", "-a", "--filter", "label=io.outpost.appliance="+a.name, "--format", "{{.Names}} {{.State}} {{.Image}}")
	var res []string
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if strings.Contains(f[0], "-job-") {
			continue
		}
		img := f[len(f)-1]
		state := f[1]
		if state == "Up" { // Podman 4.3 prints the status here
			state = "running"
		}
		res = append(res, f[0]+" "+state+" "+img[strings.LastIndex(img, ":")+1:])
	}
	sort.Strings(res)
	return res
}

// assertOn checks the appliance runs exactly store and api, api on tag.
func (a *upgradeApp) assertOn(t *testing.T, tag, greeting string) {
	t.Helper()
	want := []string{a.name + "-api running " + tag, a.name + "-store running 1"}
	eventually(t, 30*time.Second, "containers "+strings.Join(want, ", "), func() error {
		if got := a.containers(t); strings.Join(got, "|") != strings.Join(want, "|") {
			return fmt.Errorf("containers %v, want %v", got, want)
		}
		return nil
	})
	env := podman(t, "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", a.name+"-api")
	if !strings.Contains(env, "GREETING=greeting "+greeting) {
		t.Fatalf("api environment lacks greeting %q:\n%s", greeting, env)
	}
}

type historyRow struct {
	ID     int64
	Status string
}

func (a *upgradeApp) history(t *testing.T) map[int64]string {
	t.Helper()
	r := a.h.must(time.Minute, "history", "--json", "--name", a.name)
	var rows []historyRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("decoding history: %v\n%s", err, r.stdout)
	}
	out := map[int64]string{}
	for _, r := range rows {
		out[r.ID] = r.Status
	}
	return out
}

// runEnv runs outpost with extra environment variables.
func (h *harness) runEnv(timeout time.Duration, extra []string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = h.dir
	cmd.Env = append(h.env(), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("running outpost %v: %v", args, err)
	}
	if ctx.Err() != nil {
		h.t.Fatalf("outpost %v did not finish within %s\nstderr:\n%s", args, timeout, res.stderr)
	}
	return res
}

// volumeSum checksums the files written before the upgrade into a
// volume (read in the user namespace, where the container's users live).
func volumeSum(t *testing.T, volume string) string {
	t.Helper()
	dir := podman(t, "volume", "inspect", "--format", "{{.Mountpoint}}", volume)
	out := podman(t, "unshare", "sh", "-c", "cd "+dir+" && ls -ln before-upgrade-* && sha256sum before-upgrade-*")
	if !strings.Contains(out, "before-upgrade-19.dat") {
		t.Fatalf("volume %s lacks the files written before:\n%s", volume, out)
	}
	sum := sha256.Sum256([]byte(out))
	return hex.EncodeToString(sum[:])
}

// writeVolumeFiles writes 20 files into a volume, owned by the user
// namespace's root as the store's own files are.
func writeVolumeFiles(t *testing.T, volume string) {
	t.Helper()
	dir := podman(t, "volume", "inspect", "--format", "{{.Mountpoint}}", volume)
	podman(t, "unshare", "sh", "-c", "cd "+dir+` && for i in $(seq 10 29); do head -c $((i * 1000)) /dev/urandom > before-upgrade-$i.dat; done && chmod 640 before-upgrade-1*`)
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An upgrade through the daemon rotates the api: the new copy starts
// beside the old, the proxy moves to it once healthy, the old is drained;
// the upgrade job runs with captured output; the proxy answers throughout.
// Then rollback returns to revision 1 and a concurrent upgrade is refused.
func TestUpgradeRotatableThroughDaemon(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	v1 := a.file("v1.yml", "1", "v1", "", "10s")
	// No job and no stateful change: no snapshot, which would stop the
	// store (and so the api's answers) while it copies the volume.
	v2 := a.file("v2.yml", "2", "v2", "", "10s")
	d := h.daemon("-f", v1)
	url := fmt.Sprintf("http://127.0.0.1:%d/api/hello", a.port)
	eventually(t, 3*time.Minute, "v1 through the proxy", func() error {
		if d.exited() {
			t.Fatalf("daemon exited:\n%s", h.logs())
		}
		code, body, err := httpGet(url)
		if err != nil || code != 200 || !strings.Contains(body, "greeting v1") {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
	a.assertOn(t, "1", "v1")

	// The plan, and nothing changes.
	before := a.containers(t)
	r := h.must(2*time.Minute, "upgrade", "-f", v2, "--dry-run")
	for _, want := range []string{"rotate   api", "keep     store", "dry run: nothing was changed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, r.stdout)
		}
	}
	if got := a.containers(t); strings.Join(got, "|") != strings.Join(before, "|") {
		t.Fatalf("dry run changed containers: %v, was %v", got, before)
	}

	// Load through the proxy during the upgrade.
	var ok, failed atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := httpGet(url)
				if err != nil || code != 200 {
					failed.Add(1)
					failures.Store(fmt.Sprintf("%d %v %.240s", code, err, strings.Join(strings.Fields(body), " ")), true)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	first := exec.Command(bin, "upgrade", "-f", v2)
	first.Dir, first.Env = h.dir, h.env()
	var firstOut, firstErr syncBuffer
	first.Stdout, first.Stderr = &firstOut, &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// A second upgrade while the daemon runs the first is refused.
	eventually(t, time.Minute, "first upgrade under way", func() error {
		if !strings.Contains(firstErr.String(), "beside") {
			return fmt.Errorf("stderr so far: %s", firstErr.String())
		}
		return nil
	})
	if r := h.run(time.Minute, "upgrade", "-f", v2); r.code == 0 || !strings.Contains(r.stderr, "another upgrade or rollback") {
		t.Errorf("second upgrade during the first: exit %d\n%s", r.code, r.stderr)
	}
	err := first.Wait()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("upgrade: %v\n%s\n%s", err, firstOut.String(), firstErr.String())
	}
	for _, want := range []string{"beside", "proxy switched to the new copy", "proxy back on the service's own container"} {
		if !strings.Contains(firstErr.String(), want) {
			t.Errorf("upgrade progress lacks %q:\n%s", want, firstErr.String())
		}
	}
	t.Logf("requests during the upgrade: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		failures.Range(func(k, _ any) bool { t.Logf("failure: %s", k); return true })
		t.Errorf("%d requests failed through the proxy during the upgrade", failed.Load())
	}
	a.assertOn(t, "2", "v2")
	code, body, err := httpGet(url)
	if err != nil || code != 200 || !strings.Contains(body, "greeting v2") {
		t.Fatalf("after the upgrade the proxy answers %d %v %s", code, err, body)
	}
	if hist := a.history(t); hist[1] != "superseded" || hist[2] != "active" {
		t.Errorf("history %v, want 1 superseded and 2 active", hist)
	}

	// Rollback on demand, through the daemon: back to revision 1 and its proxy.
	r = h.must(5*time.Minute, "rollback")
	if !strings.Contains(r.stdout, "rolled back: revision 2 → 1") {
		t.Errorf("rollback output: %s", r.stdout)
	}
	a.assertOn(t, "1", "v1")
	eventually(t, 30*time.Second, "v1 through the proxy after rollback", func() error {
		code, body, err := httpGet(url)
		if err != nil || code != 200 || !strings.Contains(body, "greeting v1") {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
	if hist := a.history(t); hist[1] != "active" || hist[2] != "superseded" {
		t.Errorf("history after rollback %v, want 1 active and 2 superseded", hist)
	}
}

// Each failure kind rolls the whole appliance back, or, for a missing
// image, touches nothing; a concurrent upgrade is refused.
func TestUpgradeFailuresRollBack(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	v1 := a.file("v1.yml", "1", "v1", "", "10s")
	h.must(5*time.Minute, "up", "-f", v1)
	a.assertOn(t, "1", "v1")
	ids := podman(t, "ps", "-a", "-q", "--no-trunc", "--filter", "label=io.outpost.appliance="+a.name)

	// A missing image fails before anything is touched.
	missing := h.write("missing.yml", strings.Replace(string(mustRead(t, a.file("m.yml", "2", "v2", "", "10s"))),
		"outpost-e2e-upg-"+a.suffix+"/app:2", "outpost-e2e-upg-"+a.suffix+"/app:nope", 1))
	r := h.run(5*time.Minute, "upgrade", "-f", missing)
	if r.code == 0 || !strings.Contains(r.stderr, "not in local storage") || !strings.Contains(r.stderr, "nothing was created") {
		t.Fatalf("missing image: exit %d\n%s", r.code, r.stderr)
	}
	if got := podman(t, "ps", "-a", "-q", "--no-trunc", "--filter", "label=io.outpost.appliance="+a.name); got != ids {
		t.Fatalf("missing image touched containers: %s, was %s", got, ids)
	}
	if hist := a.history(t); len(hist) != 1 || hist[1] != "active" {
		t.Fatalf("missing image recorded a revision: %v", hist)
	}

	// A failing job fails the upgrade and rolls everything back.
	failing := a.file("failing.yml", "2", "v2", fmt.Sprintf(upgradeJob, `["fail"]`), "10s")
	r = h.run(5*time.Minute, "upgrade", "-f", failing)
	if r.code == 0 || !strings.Contains(r.stderr, `"migrate" job exited with code 1`) || !strings.Contains(r.stderr, "rolled back to revision 1") {
		t.Fatalf("failing job: exit %d\n%s", r.code, r.stderr)
	}
	a.assertOn(t, "1", "v1")
	if hist := a.history(t); hist[1] != "active" {
		t.Fatalf("history after the failed job: %v", hist)
	}

	// A new copy that never turns healthy rolls back too.
	unhealthy := strings.Replace(string(mustRead(t, a.file("u.yml", "2", "v2", "", "1s"))),
		"http://127.0.0.1:8080/health", "http://127.0.0.1:8999/health", 1)
	r = h.run(5*time.Minute, "upgrade", "-f", h.write("unhealthy.yml", unhealthy))
	if r.code == 0 || !strings.Contains(r.stderr, "did not become healthy") || !strings.Contains(r.stderr, "rolled back to revision 1") {
		t.Fatalf("unhealthy: exit %d\n%s", r.code, r.stderr)
	}
	a.assertOn(t, "1", "v1")

	// Two upgrades at once: the second is refused while the first runs.
	v2 := a.file("v2.yml", "2", "v2", fmt.Sprintf(upgradeJob, `["job", "slow"]`), "10s")
	first := exec.Command(bin, "upgrade", "-f", v2)
	first.Dir, first.Env = h.dir, h.env()
	var firstErr syncBuffer
	first.Stderr = &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "first upgrade under way", func() error {
		if !strings.Contains(firstErr.String(), "snapshot") {
			return fmt.Errorf("stderr so far: %s", firstErr.String())
		}
		return nil
	})
	eventually(t, time.Minute, "second upgrade refused", func() error {
		r := h.run(time.Minute, "upgrade", "-f", v2)
		if r.code != 0 && strings.Contains(r.stderr, "another upgrade or rollback of "+a.name+" is running") {
			return nil
		}
		return fmt.Errorf("second upgrade: exit %d %s", r.code, r.stderr)
	})
	if err := first.Wait(); err != nil {
		t.Fatalf("first upgrade: %v\n%s", err, firstErr.String())
	}
	a.assertOn(t, "2", "v2")
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Killing outpost at every journaled step and starting it again rolls the
// upgrade back: one copy of each service, volume contents intact. Past the
// last step, the upgrade completes.
func TestUpgradeCrashAtEveryStep(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	v1 := a.file("v1.yml", "1", "v1", "", "10s")
	v2 := a.file("v2.yml", "2", "v2", fmt.Sprintf(upgradeJob, `["job", "migrating"]`), "10s")
	h.must(5*time.Minute, "up", "-f", v1)
	a.assertOn(t, "1", "v1")
	volume := a.name + "_store-data"
	writeVolumeFiles(t, volume)
	sum := volumeSum(t, volume)

	for step := 1; ; step++ {
		if step > 20 {
			t.Fatal("the upgrade never completed")
		}
		r := h.runEnv(5*time.Minute, []string{fmt.Sprintf("OUTPOST_UPGRADE_CRASH_AT=%d", step)}, "upgrade", "-f", v2)
		if r.code == 0 {
			t.Logf("step %d: the upgrade has fewer steps and completed", step)
			break
		}
		if r.code != -1 {
			t.Fatalf("step %d: upgrade exited %d, want killed\n%s", step, r.code, r.stderr)
		}
		// Recover the three ways: upgrade --resume, up, and the daemon's start.
		switch step % 3 {
		case 1:
			r = h.must(5*time.Minute, "upgrade", "--resume", "--name", a.name)
			if !strings.Contains(r.stdout, "1 rolled back") {
				t.Errorf("step %d: resume says %q", step, r.stdout)
			}
		case 2:
			h.must(5*time.Minute, "up", "-f", v1)
		case 0:
			d := a.restartDaemon(t)
			_ = d.cmd.Process.Signal(os.Interrupt)
			if err := d.wait(); err != nil {
				t.Fatalf("daemon: %v", err)
			}
			h.must(5*time.Minute, "up", "-f", v1) // the daemon stopped the appliance
		}
		a.assertOn(t, "1", "v1")
		if got := volumeSum(t, volume); got != sum {
			t.Fatalf("step %d: volume contents changed", step)
		}
		if hist := a.history(t); hist[1] != "active" {
			t.Fatalf("step %d: history %v, want revision 1 active", step, hist)
		}
		t.Logf("step %d: killed, recovered to revision 1, volume intact", step)
	}
	a.assertOn(t, "2", "v2")
	if got := volumeSum(t, volume); got != sum {
		t.Fatal("volume contents changed by the upgrade")
	}
	logs := h.must(time.Minute, "logs", "--name", a.name, "migrate")
	if !strings.Contains(logs.stdout, "migrating") {
		t.Errorf("job output not captured: %q", logs.stdout)
	}
	if hist := a.history(t); hist[2] != "active" {
		t.Errorf("history %v, want revision 2 active", hist)
	}
}

// An upgrade that migrates the store's volume into a new one copies the
// data (checksums equal, the source kept and legacy); a rollback across
// that migration is refused, naming the snapshot taken before it.
func TestUpgradeMigrationRollbackRefused(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	v1 := a.file("v1.yml", "1", "v1", "", "10s")
	migrating := `  volumes:
    legacy: [store-data]
    migrations:
      - {from: store-data, to: new-data}
`
	v2 := string(mustRead(t, a.file("v2.yml", "2", "v2", migrating, "10s")))
	v2 = strings.Replace(v2, "      - store-data:/data", "      - new-data:/data", 1)
	v2 = strings.Replace(v2, "volumes:\n  store-data:\n", "volumes:\n  store-data:\n  new-data:\n", 1)
	v2f := h.write("v2.yml", v2)
	h.must(5*time.Minute, "up", "-f", v1)
	old := a.name + "_store-data"
	writeVolumeFiles(t, old)
	sum := volumeSum(t, old)

	r := h.must(5*time.Minute, "upgrade", "-f", v2f)
	if !strings.Contains(r.stdout, "snapshot taken before: ") || !strings.Contains(r.stdout, "legacy volumes") {
		t.Fatalf("upgrade output:\n%s\n%s", r.stdout, r.stderr)
	}
	snap := strings.TrimSpace(strings.SplitN(strings.SplitN(r.stdout, "snapshot taken before: ", 2)[1], "\n", 2)[0])
	a.assertOn(t, "2", "v2")
	if got := volumeSum(t, a.name+"_new-data"); got != sum {
		t.Fatal("the migrated volume's files differ from the source's")
	}
	if got := volumeSum(t, old); got != sum {
		t.Fatal("the source volume changed")
	}

	r = h.run(5*time.Minute, "rollback")
	if r.code == 0 || !strings.Contains(r.stderr, "rollback crosses a completed volume migration") ||
		!strings.Contains(r.stderr, "restore snapshot "+snap) || !strings.Contains(r.stderr, "outpost restore "+snap) {
		t.Fatalf("rollback across the migration: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("rollback refused: %s", r.stderr)
	a.assertOn(t, "2", "v2")
	if hist := a.history(t); hist[2] != "active" {
		t.Fatalf("history after the refused rollback: %v", hist)
	}
}
