//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// installJobsCompose has an install job (seeding, between db and api) and a
// generated secret the api gets. The job's EXIT_CODE comes from the
// environment so one definition serves the failing case too.
const installJobsCompose = `
name: instjobs
services:
  db:
    image: localhost/outpost-demo:latest
    command: ["store"]
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:7000/health", "--file", "/tmp/store-ready"]
      interval: 1s
  api:
    image: localhost/outpost-demo:latest
    command: ["api"]
    environment:
      STORE_URL: http://db:7000
      EXIT_CODE: "${SEED_EXIT:-0}"
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 1s
x-outpost:
  secrets:
    api-token: {generate: hex, length: 24}
  services:
    api: {secrets: [api-token]}
  jobs:
    seed:
      service: api
      command: ["job", "seeding", "the", "catalogue"]
      after: [db]
      before: [api]
      when: install
      timeout: 2m
`

// countEvents counts the events of a kind for a service or job.
func countEvents(evs []event, who, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Service == who && e.Kind == kind {
			n++
		}
	}
	return n
}

// TestDaemonRunsInstallJobOnce: the daemon's first start of an appliance
// (what the installed unit runs) runs its install job once, before the
// service that waits for it; a restarted daemon and a foreground `up` do
// not run it again. The secret's value reaches the api's environment and
// appears nowhere in the state database (file, WAL, shared memory).
func TestDaemonRunsInstallJobOnce(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "instjobs")
	f := h.write("compose.yml", installJobsCompose)

	startDaemon := func() *daemonProc {
		before := strings.Count(h.logs(), `msg="appliance healthy"`)
		d := h.daemon("-f", f)
		eventually(t, 4*time.Minute, "daemon healthy", func() error {
			if d.exited() {
				t.Fatalf("daemon exited: %v\n%s", d.err, h.logs())
			}
			if strings.Count(h.logs(), `msg="appliance healthy"`) == before {
				return os.ErrNotExist
			}
			return allHealthy(h.status("--name", "instjobs"), 2)
		})
		return d
	}
	stopDaemon := func(d *daemonProc) {
		_ = d.cmd.Process.Signal(os.Interrupt)
		if err := d.wait(); err != nil {
			t.Fatalf("daemon: %v\n%s", err, h.logs())
		}
	}

	d := startDaemon()
	evs := h.events("--name", "instjobs")
	if n := countEvents(evs, "seed", "job-exited"); n != 1 {
		t.Fatalf("install job ran %d times on the first start, want 1", n)
	}
	if !firstEvent(t, evs, "api", "started").After(firstEvent(t, evs, "seed", "job-exited")) ||
		!firstEvent(t, evs, "seed", "job-exited").After(firstEvent(t, evs, "db", "healthy")) {
		t.Fatal("order: want db healthy < seed done < api started")
	}
	if countEvents(evs, "seed", "install-job-done") != 1 {
		t.Fatal("the install job's completion is not recorded")
	}
	if logs := h.must(time.Minute, "logs", "seed"); !strings.Contains(logs.stdout, "seeding the catalogue") {
		t.Fatalf("job output not captured: %q", logs.stdout)
	}
	jobID := podman(t, "inspect", "instjobs-job-seed", "--format", "{{.Id}}")

	// The secret: in the container's environment, nowhere in the database.
	secret, err := os.ReadFile(filepath.Join(h.stateDir, "secrets", "instjobs", "api-token"))
	if err != nil || len(bytes.TrimSpace(secret)) != 48 {
		t.Fatalf("secret file: %v %q", err, secret)
	}
	value := bytes.TrimSpace(secret)
	if env := podman(t, "inspect", "instjobs-api", "--format", "{{range .Config.Env}}{{println .}}{{end}}"); !strings.Contains(env, "API_TOKEN="+string(value)+"\n") {
		t.Fatal("api's environment lacks API_TOKEN=<the generated secret>")
	}
	// While a process has the database open its WAL holds the recent
	// writes; the last process to close it checkpoints and removes it.
	assertNotInDB := func(wantWAL bool) {
		t.Helper()
		files, _ := filepath.Glob(filepath.Join(h.stateDir, "outpost.db*"))
		if len(files) == 0 || wantWAL && len(files) < 2 {
			t.Fatalf("database files %v: want the database and (daemon running) its WAL", files)
		}
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, value) {
				t.Fatalf("the secret's value is in %s", p)
			}
		}
	}
	assertNotInDB(true)

	// Restart the daemon: the job does not run again.
	stopDaemon(d)
	d = startDaemon()
	if n := countEvents(h.events("--name", "instjobs"), "seed", "job-exited"); n != 1 {
		t.Fatalf("install job ran %d times after a daemon restart, want 1", n)
	}
	if id := podman(t, "inspect", "instjobs-job-seed", "--format", "{{.Id}}"); id != jobID {
		t.Fatal("the install job's container was replaced: it ran again")
	}
	// Nor after `down` and a foreground `up` (a reboot that lost the
	// containers, then a start without the daemon).
	stopDaemon(d)
	h.must(3*time.Minute, "down", "--name", "instjobs")
	h.must(5*time.Minute, "up", "-f", f)
	if n := countEvents(h.events("--name", "instjobs"), "seed", "job-exited"); n != 1 {
		t.Fatalf("install job ran %d times after down and up, want 1", n)
	}
	assertNotInDB(false)
}

// TestFailingInstallJobFailsDaemonStart: the daemon's first start fails
// naming the job and its output, and nothing after the job starts.
func TestFailingInstallJobFailsDaemonStart(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "instjobs")
	h.write(".env", "SEED_EXIT=4\n")
	f := h.write("compose.yml", installJobsCompose)
	d := h.daemon("-f", f)
	select {
	case <-d.done:
	case <-time.After(4 * time.Minute):
		t.Fatal("daemon still running although its install job fails")
	}
	if d.err == nil {
		t.Fatal("daemon exited 0 although its install job failed")
	}
	logs := h.logs()
	for _, want := range []string{`"seed" job exited with code 4`, "seeding the catalogue", "outpost logs seed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("daemon output lacks %q:\n%s", want, logs)
		}
	}
	for _, name := range containersOf(t, "instjobs") {
		if name == "instjobs-api" {
			t.Fatal("api was created although the install job before it failed")
		}
	}
	if countEvents(h.events("--name", "instjobs"), "seed", "install-job-done") != 0 {
		t.Fatal("a failed install job was recorded as done")
	}
}

// TestSecretSurvivesRollbackAndRestore: revisions and snapshots record
// markers, not values; a rollback and a restore put the value back into
// the containers they recreate, and the database never gets it.
func TestSecretSurvivesRollbackAndRestore(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "instjobs")
	v1 := h.write("compose.yml", installJobsCompose)
	v2 := h.write("compose.v2.yml", strings.Replace(installJobsCompose, "STORE_URL: http://db:7000", "STORE_URL: http://db:7000\n      RELEASE: \"2\"", 1))
	h.must(5*time.Minute, "up", "-f", v1)
	secret, err := os.ReadFile(filepath.Join(h.stateDir, "secrets", "instjobs", "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	want := "API_TOKEN=" + string(bytes.TrimSpace(secret)) + "\n"
	apiEnv := func(step string) {
		t.Helper()
		env := podman(t, "inspect", "instjobs-api", "--format", "{{range .Config.Env}}{{println .}}{{end}}")
		if !strings.Contains(env+"\n", want) {
			t.Fatalf("after %s, api's environment lacks the secret's value (API_TOKEN is %q)", step, envValue(env, "API_TOKEN"))
		}
	}
	apiEnv("up")
	h.must(5*time.Minute, "upgrade", "-f", v2, "--skip-backup")
	apiEnv("upgrade")
	h.must(5*time.Minute, "rollback")
	apiEnv("rollback")
	if envValue(podman(t, "inspect", "instjobs-api", "--format", "{{range .Config.Env}}{{println .}}{{end}}"), "RELEASE") != "" {
		t.Fatal("rollback did not return api to revision 1")
	}
	r := h.must(10*time.Minute, "backup", "--json")
	var res struct{ Path string }
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Path == "" {
		t.Fatalf("decoding backup result: %v\n%s", err, r.stdout)
	}
	if def, err := os.ReadFile(filepath.Join(res.Path, "definition.json")); err != nil || bytes.Contains(def, bytes.TrimSpace(secret)) {
		t.Fatalf("snapshot definition holds the value (or is unreadable: %v)", err)
	}
	h.must(3*time.Minute, "down")
	h.must(10*time.Minute, "restore", "--stop", res.Path)
	apiEnv("restore")
	files, _ := filepath.Glob(filepath.Join(h.stateDir, "outpost.db*"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, bytes.TrimSpace(secret)) {
			t.Fatalf("the secret's value is in %s", p)
		}
	}

	// Exports write the value only when asked to, and then this one.
	value := string(bytes.TrimSpace(secret))
	r = h.must(time.Minute, "export", "kube", "-f", v1)
	if strings.Contains(r.stdout, value) {
		t.Error("export kube wrote the secret's value without --with-secrets")
	}
	if from := "--from-file=api-token=" + filepath.Join(h.stateDir, "secrets", "instjobs", "api-token"); !strings.Contains(r.stderr, from) {
		t.Errorf("export kube does not say how to create the Secret from this box's file (%s):\n%s", from, r.stderr)
	}
	r = h.must(time.Minute, "export", "kube", "-f", v1, "--with-secrets")
	if !strings.Contains(r.stdout, "kind: Secret") || !strings.Contains(r.stdout, value) {
		t.Errorf("export kube --with-secrets lacks the Secret with the value:\n%s", r.stdout)
	}
	if r = h.run(time.Minute, "export", "kube", "-f", v1, "--target", "podman"); r.code == 0 || !strings.Contains(r.stderr, "x-outpost.secrets.api-token") || !strings.Contains(r.stderr, "--with-secrets") {
		t.Errorf("export kube --target podman without --with-secrets: exit %d\n%s", r.code, r.stderr)
	}
}

// envValue returns NAME's value in `podman inspect`'s environment lines.
func envValue(env, name string) string {
	for _, l := range strings.Split(env, "\n") {
		if v, ok := strings.CutPrefix(l, name+"="); ok {
			return v
		}
	}
	return ""
}
