//go:build e2e

// Package e2e drives the built outpost binary against real rootless Podman.
// Run it with `make e2e` (as root it runs as the unprivileged test user);
// OUTPOST_BIN names the binary under test.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	assets "github.com/outpostdev/outpost/embed"
)

var bin string

func TestMain(m *testing.M) {
	bin = os.Getenv("OUTPOST_BIN")
	if bin == "" {
		fmt.Fprintln(os.Stderr, "e2e: OUTPOST_BIN must name the outpost binary under test (use `make e2e`)")
		os.Exit(2)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: podman is not installed; run `make setup` as root")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// harness is one isolated Outpost installation: its own state and runtime
// directories, sharing the user's Podman storage.
type harness struct {
	t          *testing.T
	dir        string
	stateDir   string
	runtimeDir string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, dir: dir, stateDir: filepath.Join(dir, "state"), runtimeDir: filepath.Join(dir, "run")}
	return h
}

func (h *harness) env() []string {
	env := []string{"OUTPOST_STATE_DIR=" + h.stateDir, "OUTPOST_RUNTIME_DIR=" + h.runtimeDir}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTAINER_HOST=") && !strings.HasPrefix(kv, "OUTPOST_") {
			env = append(env, kv)
		}
	}
	return env
}

type result struct {
	stdout, stderr string
	code           int
}

// demoDefinition returns the embedded demo's Compose file with each old →
// new pair replaced; an old string it lacks fails the test, since the demo
// then changed shape under the test.
func demoDefinition(t *testing.T, oldnew ...string) string {
	t.Helper()
	demo, err := assets.FS.ReadFile(assets.DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	def := string(demo)
	for i := 0; i+1 < len(oldnew); i += 2 {
		if !strings.Contains(def, oldnew[i]) {
			t.Fatalf("the demo definition changed shape: this test replaces %q, which it lacks", oldnew[i])
		}
	}
	return strings.NewReplacer(oldnew...).Replace(def)
}

// run runs outpost with args in the harness directory and waits.
func (h *harness) run(timeout time.Duration, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = h.dir
	cmd.Env = h.env()
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

// must runs outpost and fails the test on a non-zero exit.
func (h *harness) must(timeout time.Duration, args ...string) result {
	h.t.Helper()
	r := h.run(timeout, args...)
	if r.code != 0 {
		h.t.Fatalf("outpost %v exited %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

// daemonProc is a background `outpost run`.
type daemonProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// exited reports whether the daemon has ended.
func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// wait waits for the daemon to end and returns its exit error.
func (d *daemonProc) wait() error {
	<-d.done
	return d.err
}

// daemon starts `outpost run` in the background; the test's cleanup stops it.
func (h *harness) daemon(args ...string) *daemonProc {
	h.t.Helper()
	cmd := exec.Command(bin, append([]string{"run", "--log-level", "info"}, args...)...)
	cmd.Dir = h.dir
	cmd.Env = h.env()
	logf, err := os.Create(filepath.Join(h.dir, fmt.Sprintf("daemon-%d.log", time.Now().UnixNano())))
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	h.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-d.done
		}
		if h.t.Failed() {
			h.t.Logf("daemon logs:\n%s", h.logs())
		}
	})
	return d
}

func (h *harness) logs() string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(h.dir, "daemon-*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "== %s\n%s\n", f, data)
	}
	return b.String()
}

// write puts a file into the harness directory.
func (h *harness) write(name, content string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	return p
}

type serviceState struct {
	Service     string
	ContainerID string `json:"container_id"`
	State       string
	Health      string
	Restarts    int
	StartedAt   time.Time `json:"started_at"`
}

type statusReply struct {
	Appliance string
	Revision  int64
	Daemon    bool
	Services  []serviceState
}

func (h *harness) status(args ...string) statusReply {
	h.t.Helper()
	r := h.must(2*time.Minute, append([]string{"status", "--json"}, args...)...)
	var s statusReply
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		h.t.Fatalf("decoding status: %v\n%s", err, r.stdout)
	}
	return s
}

type event struct {
	ID      int64
	Service string
	Kind    string
	Message string
	At      time.Time
}

func (h *harness) events(args ...string) []event {
	h.t.Helper()
	r := h.must(time.Minute, append([]string{"events", "--json"}, args...)...)
	var evs []event
	if err := json.Unmarshal([]byte(r.stdout), &evs); err != nil {
		h.t.Fatalf("decoding events: %v\n%s", err, r.stdout)
	}
	return evs
}

// podman runs the podman CLI as the test user.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// eventually polls f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func httpGet(url string) (int, string, error) {
	return get(&http.Client{Timeout: 3 * time.Second}, url)
}

// get GETs url with client c: the status and the body.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// cleanupAppliance removes what a test appliance left: containers and
// networks through outpost down, then its volumes (test-only cleanup).
func cleanupAppliance(h *harness, name string) {
	h.t.Cleanup(func() {
		h.run(3*time.Minute, "down", "--name", name)
		out, _ := exec.Command("podman", "volume", "ls", "-q", "--filter", "label=io.outpost.appliance="+name).Output()
		for _, v := range lines(string(out)) {
			_ = exec.Command("podman", "volume", "rm", "-f", v).Run()
		}
	})
}
