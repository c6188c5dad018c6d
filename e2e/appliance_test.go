//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	demoName = "outpost-demo"
	demoAPI  = "http://127.0.0.1:18000" // web forwards /api/* to the api service
	demoWeb  = "http://127.0.0.1:18000"
)

// firstEvent returns the time of the first event of kind for service.
func firstEvent(t *testing.T, evs []event, service, kind string) time.Time {
	t.Helper()
	for _, e := range evs {
		if e.Service == service && e.Kind == kind {
			return e.At
		}
	}
	t.Fatalf("no %q event for %s in %+v", kind, service, evs)
	return time.Time{}
}

func allHealthy(s statusReply, n int) error {
	if len(s.Services) != n {
		return fmt.Errorf("%d services, want %d", len(s.Services), n)
	}
	for _, svc := range s.Services {
		if svc.State != "running" || svc.Health != "healthy" {
			return fmt.Errorf("%s is %s/%s", svc.Service, svc.State, svc.Health)
		}
	}
	return nil
}

func containersOf(t *testing.T, app string) []string {
	return lines(podman(t, "ps", "-a", "--format", "{{.Names}}", "--filter", "label=io.outpost.appliance="+app))
}

// The embedded demo comes up healthy with no registry, in dependency order
// gated on ready markers, and its data survives down/up.
func TestDemoLifecycle(t *testing.T) {
	h := newHarness(t)
	cleanupAppliance(h, demoName)

	r := h.must(10*time.Minute, "up")
	if !strings.Contains(r.stdout, "outpost-demo is up") {
		t.Fatalf("up output: %s", r.stdout)
	}
	st := h.status()
	if err := allHealthy(st, 4); err != nil {
		t.Fatalf("after up: %v", err)
	}

	// A dependant starts only after its dependency is healthy, and the
	// store's health includes its ready marker (written after one-shot init).
	evs := h.events()
	storeHealthy := firstEvent(t, evs, "store", "healthy")
	apiStarted := firstEvent(t, evs, "api", "started")
	storeStarted := firstEvent(t, evs, "store", "started")
	if !apiStarted.After(storeHealthy) {
		t.Fatalf("api started at %s, before store was healthy at %s", apiStarted, storeHealthy)
	}
	if storeHealthy.Sub(storeStarted) < 2*time.Second {
		t.Fatalf("store healthy %s after start: the 2 s init before its ready marker was not waited for", storeHealthy.Sub(storeStarted))
	}
	apiHealthy := firstEvent(t, evs, "api", "healthy")
	for _, dep := range []string{"worker", "web"} {
		if s := firstEvent(t, evs, dep, "started"); !s.After(apiHealthy) {
			t.Fatalf("%s started at %s, before api was healthy at %s", dep, s, apiHealthy)
		}
	}

	code, body, err := httpGet(demoWeb + "/")
	if err != nil || code != 200 || !strings.Contains(body, "Outpost demo") {
		t.Fatalf("web front: %d %v %.200s", code, err, body)
	}
	resp, err := http.Post(demoAPI+"/api/notes", "text/plain", strings.NewReader("kept across down/up"))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("writing a note: %v %v", resp, err)
	}
	resp.Body.Close()

	// A second up changes nothing: same containers, no recreation.
	before := h.status()
	h.must(5*time.Minute, "up")
	after := h.status()
	for i := range before.Services {
		if before.Services[i].ContainerID != after.Services[i].ContainerID {
			t.Fatalf("second up recreated %s", before.Services[i].Service)
		}
	}

	h.must(5*time.Minute, "down")
	if c := containersOf(t, demoName); len(c) != 0 {
		t.Fatalf("containers left after down: %v", c)
	}
	vols := podman(t, "volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+demoName)
	if !strings.Contains(vols, "outpost-demo_store-data") {
		t.Fatalf("down removed the data volume; volumes: %q", vols)
	}

	h.must(10*time.Minute, "up")
	code, body, err = httpGet(demoAPI + "/api/notes")
	if err != nil || code != 200 || !strings.Contains(body, "kept across down/up") {
		t.Fatalf("note after down/up: %d %v %s", code, err, body)
	}
	code, body, err = httpGet(demoAPI + "/api/hello")
	if err != nil || code != 200 {
		t.Fatalf("hello: %d %v %s", code, err, body)
	}
	var hello struct {
		Store struct {
			Boots int `json:"boots"`
		} `json:"store"`
	}
	if err := json.Unmarshal([]byte(body), &hello); err != nil || hello.Store.Boots < 2 {
		t.Fatalf("store boots after down/up = %d (%v); the volume was not reused: %s", hello.Store.Boots, err, body)
	}
}

// The daemon heals a killed container, and a killed daemon's successor
// adopts the running containers instead of duplicating them.
func TestDaemonSupervision(t *testing.T) {
	h := newHarness(t)
	cleanupAppliance(h, demoName)
	d := h.daemon()
	eventually(t, 5*time.Minute, "daemon brings the demo up", func() error {
		if d.exited() {
			t.Fatalf("daemon exited: %v\n%s", d.err, h.logs())
		}
		r := h.run(time.Minute, "status", "--json")
		if r.code != 0 {
			return fmt.Errorf("status: %s", r.stderr)
		}
		var s statusReply
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			return err
		}
		if !s.Daemon {
			return fmt.Errorf("status not served by the daemon")
		}
		return allHealthy(s, 4)
	})

	// kill -9 of a container is healed.
	before := h.status()
	podman(t, "kill", "--signal", "KILL", demoName+"-api")
	eventually(t, 2*time.Minute, "api restarted and healthy", func() error {
		s := h.status()
		for _, svc := range s.Services {
			if svc.Service == "api" {
				if svc.Restarts < 1 {
					return fmt.Errorf("api restarts = %d", svc.Restarts)
				}
				if svc.Health != "healthy" || svc.State != "running" {
					return fmt.Errorf("api %s/%s", svc.State, svc.Health)
				}
			}
		}
		return nil
	})

	// kill -9 of the daemon: the next one adopts what runs.
	ids := map[string]string{}
	for _, s := range h.status().Services {
		ids[s.Service] = s.ContainerID
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = d.wait()
	_ = before
	d2 := h.daemon()
	eventually(t, 5*time.Minute, "second daemon healthy", func() error {
		if d2.exited() {
			t.Fatalf("daemon exited: %v\n%s", d2.err, h.logs())
		}
		s := h.status()
		if !s.Daemon {
			return fmt.Errorf("status not served by the daemon")
		}
		return allHealthy(s, 4)
	})
	for _, s := range h.status().Services {
		if ids[s.Service] != s.ContainerID {
			t.Errorf("%s: container %s replaced by %s after daemon restart", s.Service, ids[s.Service], s.ContainerID)
		}
	}
	if c := containersOf(t, demoName); len(c) != 4 {
		t.Fatalf("containers after daemon restart: %v (want exactly 4, no duplicates)", c)
	}

	// SIGTERM stops the appliance in reverse dependency order.
	since := h.events()
	last := since[len(since)-1].ID
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := d2.wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, h.logs())
	}
	stopped := map[string]time.Time{}
	for _, e := range h.events("--since", fmt.Sprint(last)) {
		if e.Kind == "stopped" {
			stopped[e.Service] = e.At
		}
	}
	if len(stopped) != 4 {
		t.Fatalf("stopped events: %v", stopped)
	}
	for _, dep := range []string{"worker", "web"} {
		if !stopped[dep].Before(stopped["api"]) {
			t.Errorf("%s stopped at %s, after api at %s", dep, stopped[dep], stopped["api"])
		}
	}
	if !stopped["api"].Before(stopped["store"]) {
		t.Errorf("api stopped after store")
	}
	running := podman(t, "ps", "--format", "{{.Names}}", "--filter", "label=io.outpost.appliance="+demoName)
	if running != "" {
		t.Fatalf("still running after daemon stop: %s", running)
	}

	// As after a reboot: the stopped containers are started again in the
	// gated order, not left to Podman's restart policy.
	evs := h.events()
	last = evs[len(evs)-1].ID
	d3 := h.daemon()
	eventually(t, 5*time.Minute, "third daemon healthy", func() error {
		if d3.exited() {
			t.Fatalf("daemon exited: %v\n%s", d3.err, h.logs())
		}
		s := h.status()
		if !s.Daemon {
			return fmt.Errorf("status not served by the daemon")
		}
		return allHealthy(s, 4)
	})
	replay := h.events("--since", fmt.Sprint(last))
	if s, hl := firstEvent(t, replay, "api", "started"), firstEvent(t, replay, "store", "healthy"); !s.After(hl) {
		t.Fatalf("replayed start: api started at %s before store healthy at %s", s, hl)
	}
	for _, s := range h.status().Services {
		if ids[s.Service] != s.ContainerID {
			t.Errorf("%s: container replaced on restart after stop", s.Service)
		}
	}
}

const brokenCompose = `
name: broken
services:
  base:
    image: localhost/outpost-demo:latest
    command: ["store"]
    environment:
      INIT_DELAY: 0s
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:7000/health"]
      interval: 1s
      retries: 3
  broken:
    image: localhost/outpost-demo:latest
    command: ["sleep"]
    depends_on:
      base:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--file", "/tmp/never-ready"]
      interval: 300ms
      timeout: 2s
      retries: 2
  after:
    image: localhost/outpost-demo:latest
    command: ["sleep"]
    depends_on:
      broken:
        condition: service_healthy
`

// A service that never gets healthy fails up with its name, its last probe
// output and its log lines, and its dependants never start.
func TestFailingHealthFailsUp(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "broken")
	f := h.write("compose.yml", brokenCompose)
	r := h.run(5*time.Minute, "up", "-f", f)
	if r.code == 0 {
		t.Fatalf("up succeeded with a failing health check:\n%s", r.stdout)
	}
	for _, want := range []string{`service "broken" did not become healthy`, "last health check", "/tmp/never-ready", "last log lines"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("up error lacks %q:\n%s", want, r.stderr)
		}
	}
	if names := containersOf(t, "broken"); strings.Contains(strings.Join(names, " "), "broken-after") {
		t.Fatalf("the dependant of the failing service was created: %v", names)
	}
}

// Malformed definitions are refused with the file and key named, and
// nothing is created on Podman.
func TestMalformedInputRefused(t *testing.T) {
	h := newHarness(t)
	cases := map[string]struct {
		compose string
		want    []string
	}{
		"bad-role": {`
services:
  a:
    image: localhost/outpost-demo:latest
    volumes: [data:/data]
x-outpost:
  name: bad-role
  services:
    a: {role: sometimes}
volumes:
  data: {}
`, []string{"bad-role.yml", "x-outpost.services.a.role"}},
		"unknown-field": {`
services:
  a:
    image: localhost/outpost-demo:latest
x-outpost:
  name: unknown-field
  proxxy: {}
`, []string{"unknown-field.yml", "proxxy"}},
		"unknown-dependency": {`
name: unknown-dependency
services:
  a:
    image: localhost/outpost-demo:latest
    depends_on: [nope]
`, []string{"unknown-dependency.yml", "nope"}},
		"bad-yaml": {"services: [\n", []string{"bad-yaml.yml"}},
		"ulimit-above-hard-limit": {`
name: ulimit-above-hard-limit
services:
  a:
    image: localhost/outpost-demo:latest
    ulimits:
      nofile: 99999999
    volumes: [data:/data]
volumes:
  data: {}
`, []string{"services.a.ulimits.nofile", "hard limit"}},
		"missing-image": {`
name: missing-image
services:
  a:
    image: localhost/does-not-exist:1
    volumes: [data:/data]
volumes:
  data: {}
`, []string{"services.a.image", "localhost/does-not-exist:1", "never pulls"}},
	}
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		tc := cases[name]
		t.Run(name, func(t *testing.T) {
			f := h.write(name+".yml", tc.compose)
			r := h.run(3*time.Minute, "up", "-f", f)
			if r.code == 0 {
				t.Fatalf("up accepted a malformed definition")
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error lacks %q:\n%s", w, r.stderr)
				}
			}
			for _, kind := range []string{"ps -a", "volume ls", "network ls"} {
				args := append(strings.Fields(kind), "-q", "--filter", "label=io.outpost.appliance="+name)
				out, err := exec.Command("podman", args...).CombinedOutput()
				if err != nil {
					t.Fatalf("podman %s: %v %s", kind, err, out)
				}
				if strings.TrimSpace(string(out)) != "" {
					t.Errorf("podman %s shows leftovers for %s: %s", kind, name, out)
				}
			}
		})
	}
}
