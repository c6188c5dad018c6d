package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a goroutine-safe bytes.Buffer for role output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// roleRun is a role running in a goroutine.
type roleRun struct {
	url    string // http://addr when the role listens
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when the role returned
	err    error         // valid once done is closed
}

// stop cancels the role and returns its error.
func (r *roleRun) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("role did not stop")
		return nil
	}
}

// startRole runs role with env (nothing from the process environment).
// It listens on ln when given, else on a fresh loopback port.
func startRole(t *testing.T, role string, env map[string]string, ln net.Listener, args ...string) *roleRun {
	t.Helper()
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &roleRun{url: "http://" + ln.Addr().String(), out: &syncBuffer{}, cancel: cancel, done: make(chan struct{})}
	used := false
	e := &roleEnv{
		lookup: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		listen: func(string) (net.Listener, error) {
			if used {
				return nil, errors.New("listen called twice")
			}
			used = true
			return ln, nil
		},
		stdout: r.out,
		stderr: r.out,
	}
	go func() {
		r.err = runRole(ctx, role, args, e)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
		}
		if !used {
			ln.Close()
		}
	})
	return r
}

// eventually polls cond until it is true or fails the test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func status(t *testing.T, url string) int {
	t.Helper()
	code, _ := httpDo(t, http.MethodGet, url, "")
	return code
}

func storeEnv(dir string) map[string]string {
	return map[string]string{
		"DATA_DIR":     filepath.Join(dir, "data"),
		"INIT_DELAY":   "300ms",
		"READY_MARKER": filepath.Join(dir, "store-ready"),
		"READY_FILE":   filepath.Join(dir, "ready"),
	}
}

func TestStoreInitMarkerAndPersistence(t *testing.T) {
	dir := t.TempDir()
	env := storeEnv(dir)
	marker := env["READY_MARKER"]
	if err := os.WriteFile(marker, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}

	s := startRole(t, "store", env, nil)
	// Before init: stale marker gone, health 503, data refused.
	eventually(t, "stale marker removed", func() bool { return !exists(marker) })
	if got := status(t, s.url+"/health"); got != http.StatusServiceUnavailable {
		t.Fatalf("health before init = %d, want 503", got)
	}
	if got := status(t, s.url+"/kv/a"); got != http.StatusServiceUnavailable {
		t.Fatalf("kv before init = %d, want 503", got)
	}
	eventually(t, "store healthy", func() bool { return status(t, s.url+"/health") == http.StatusOK })
	if !exists(marker) || !exists(env["READY_FILE"]) {
		t.Fatal("markers not written after init")
	}
	if !exists(filepath.Join(env["DATA_DIR"], storeFile)) {
		t.Fatal("store.json not created")
	}

	if code, body := httpDo(t, http.MethodPut, s.url+"/kv/greeting", "hello"); code != http.StatusNoContent {
		t.Fatalf("PUT = %d %s", code, body)
	}
	if code, body := httpDo(t, http.MethodGet, s.url+"/kv/greeting", ""); code != http.StatusOK || body != "hello" {
		t.Fatalf("GET = %d %q", code, body)
	}
	if code, _ := httpDo(t, http.MethodGet, s.url+"/kv/missing", ""); code != http.StatusNotFound {
		t.Fatalf("GET missing = %d, want 404", code)
	}
	assertStats(t, s.url, storeStats{Boots: 1, Keys: 1})
	if err := s.stop(t); err != nil {
		t.Fatalf("store stop: %v", err)
	}

	// Restart on the same data dir: data kept, boot counted, marker
	// removed until init is done again.
	s = startRole(t, "store", env, nil)
	eventually(t, "marker removed on restart", func() bool { return !exists(marker) })
	eventually(t, "store healthy again", func() bool { return status(t, s.url+"/health") == http.StatusOK })
	if code, body := httpDo(t, http.MethodGet, s.url+"/kv/greeting", ""); code != http.StatusOK || body != "hello" {
		t.Fatalf("GET after restart = %d %q", code, body)
	}
	assertStats(t, s.url, storeStats{Boots: 2, Keys: 1})
	code, body := httpDo(t, http.MethodGet, s.url+"/kv?prefix=gr", "")
	if code != http.StatusOK || !strings.Contains(body, `"greeting": "hello"`) {
		t.Fatalf("list = %d %s", code, body)
	}
	if err := s.stop(t); err != nil {
		t.Fatalf("store stop: %v", err)
	}
}

func assertStats(t *testing.T, url string, want storeStats) {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, url+"/stats", "")
	var got storeStats
	if code != http.StatusOK || json.Unmarshal([]byte(body), &got) != nil || got != want {
		t.Fatalf("stats = %d %s, want %+v", code, body, want)
	}
}

func TestStoreInitFailureIsRoleError(t *testing.T) {
	dir := t.TempDir()
	env := storeEnv(dir)
	env["INIT_DELAY"] = "0s"
	// DATA_DIR under a regular file cannot be created.
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env["DATA_DIR"] = filepath.Join(blocker, "data")
	s := startRole(t, "store", env, nil)
	select {
	case <-s.done:
		if s.err == nil || !strings.Contains(s.err.Error(), "creating data dir") {
			t.Fatalf("err = %v, want a data dir error", s.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("store did not fail")
	}
	if exists(env["READY_MARKER"]) {
		t.Fatal("marker written although init failed")
	}
}

func TestAPIHealthFollowsStore(t *testing.T) {
	dir := t.TempDir()
	storeLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiMarker := filepath.Join(dir, "api-ready")
	api := startRole(t, "api", map[string]string{
		"STORE_URL":    "http://" + storeLn.Addr().String(),
		"READY_MARKER": apiMarker,
		"READY_FILE":   "",
		"GREETING":     "hi there",
	}, nil)

	// The store's port is bound but nobody serves it yet.
	if got := status(t, api.url+"/health"); got != http.StatusServiceUnavailable {
		t.Fatalf("api health without store = %d, want 503", got)
	}
	if exists(apiMarker) {
		t.Fatal("api marker written before store contact")
	}

	senv := storeEnv(dir)
	senv["INIT_DELAY"] = "0s"
	store := startRole(t, "store", senv, storeLn)
	eventually(t, "api healthy", func() bool { return status(t, api.url+"/health") == http.StatusOK })
	eventually(t, "api marker", func() bool { return exists(apiMarker) })

	code, body := httpDo(t, http.MethodGet, api.url+"/api/hello", "")
	var hello struct {
		Message  string     `json:"message"`
		Hostname string     `json:"hostname"`
		Store    storeStats `json:"store"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &hello) != nil {
		t.Fatalf("hello = %d %s", code, body)
	}
	host, _ := os.Hostname()
	if hello.Message != "hi there" || hello.Hostname != host || hello.Store.Boots != 1 {
		t.Fatalf("hello = %+v", hello)
	}

	for _, in := range []string{`{"text":"first"}`, "second"} {
		if code, body := httpDo(t, http.MethodPost, api.url+"/api/notes", in); code != http.StatusCreated {
			t.Fatalf("POST note = %d %s", code, body)
		}
	}
	if code, _ := httpDo(t, http.MethodPost, api.url+"/api/notes", "  "); code != http.StatusBadRequest {
		t.Fatalf("POST empty note = %d, want 400", code)
	}
	code, body = httpDo(t, http.MethodGet, api.url+"/api/notes", "")
	var notes []note
	if code != http.StatusOK || json.Unmarshal([]byte(body), &notes) != nil {
		t.Fatalf("notes = %d %s", code, body)
	}
	if len(notes) != 2 || notes[0].Text != "first" || notes[1].Text != "second" {
		t.Fatalf("notes = %+v", notes)
	}

	if err := store.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := status(t, api.url+"/health"); got != http.StatusServiceUnavailable {
		t.Fatalf("api health after store stopped = %d, want 503", got)
	}
	if got := status(t, api.url+"/api/hello"); got != http.StatusBadGateway {
		t.Fatalf("hello after store stopped = %d, want 502", got)
	}
	if err := api.stop(t); err != nil {
		t.Fatalf("api stop: %v", err)
	}
}

func TestWorkerHeartbeat(t *testing.T) {
	dir := t.TempDir()
	var failing sync.Map
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, bad := failing.Load("x"); bad || r.URL.Path != "/api/hello" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer apiSrv.Close()
	hb := filepath.Join(dir, "hb")
	ready := filepath.Join(dir, "ready")
	w := startRole(t, "worker", map[string]string{
		"API_URL":        apiSrv.URL,
		"INTERVAL":       "50ms",
		"HEARTBEAT_FILE": hb,
		"READY_FILE":     ready,
	}, nil)
	eventually(t, "heartbeat", func() bool { return exists(hb) && exists(ready) })
	if err := probe(t, "--max-age", hb+"=500ms"); err != nil {
		t.Fatalf("fresh heartbeat probe: %v", err)
	}

	failing.Store("x", true)
	eventually(t, "stale heartbeat", func() bool { return probe(t, "--max-age", hb+"=200ms") != nil })
	if !strings.Contains(w.out.String(), "api call failed") {
		t.Fatalf("worker did not log the failure:\n%s", w.out)
	}
	if err := w.stop(t); err != nil {
		t.Fatalf("worker stop: %v", err)
	}
}

func TestWebServesPageAndProxiesAPI(t *testing.T) {
	dir := t.TempDir()
	apiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"path": r.URL.Path})
	}))
	defer apiSrv.Close()
	marker := filepath.Join(dir, "web-ready")
	web := startRole(t, "web", map[string]string{
		"API_URL":      apiSrv.URL,
		"READY_MARKER": marker,
		"READY_FILE":   "",
	}, nil)
	eventually(t, "web marker", func() bool { return exists(marker) })

	code, body := httpDo(t, http.MethodGet, web.url+"/", "")
	if code != http.StatusOK || !strings.Contains(body, "<title>Outpost demo</title>") || !strings.Contains(body, `fetch(path`) {
		t.Fatalf("index = %d %.200s", code, body)
	}
	if got := status(t, web.url+"/health"); got != http.StatusOK {
		t.Fatalf("health = %d", got)
	}
	code, body = httpDo(t, http.MethodGet, web.url+"/api/hello", "")
	if code != http.StatusOK || !strings.Contains(body, `"/api/hello"`) {
		t.Fatalf("proxied hello = %d %s", code, body)
	}
	if got := status(t, web.url+"/nope"); got != http.StatusNotFound {
		t.Fatalf("unknown path = %d, want 404", got)
	}
	apiSrv.Close()
	if got := status(t, web.url+"/api/hello"); got != http.StatusBadGateway {
		t.Fatalf("hello with api down = %d, want 502", got)
	}
	if err := web.stop(t); err != nil {
		t.Fatalf("web stop: %v", err)
	}
}

// probe runs the probe role synchronously.
func probe(t *testing.T, args ...string) error {
	t.Helper()
	var out bytes.Buffer
	return runRole(context.Background(), "probe", args, &roleEnv{
		lookup: func(string) (string, bool) { return "", false },
		stdout: &out,
		stderr: &out,
	})
}

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	fresh := filepath.Join(dir, "fresh")
	old := filepath.Join(dir, "old")
	for _, p := range []string{fresh, old} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name string
		args []string
		pass bool
		want string // in the printed output when failing
	}{
		{"http ok", []string{"--http", ok.URL + "/health"}, true, ""},
		{"http redirect", []string{"--http", ok.URL + "/redirect"}, true, ""},
		{"http 503", []string{"--http", bad.URL}, false, "status 503"},
		{"tcp open", []string{"--tcp", ln.Addr().String()}, true, ""},
		{"tcp closed", []string{"--tcp", closedAddr}, false, "tcp " + closedAddr},
		{"file exists", []string{"--file", fresh}, true, ""},
		{"file missing", []string{"--file", missing}, false, "file " + missing},
		{"max-age fresh", []string{"--max-age", fresh + "=1m"}, true, ""},
		{"max-age old", []string{"--max-age", old + "=1m"}, false, "more than 1m0s"},
		{"max-age missing", []string{"--max-age", missing + "=1m"}, false, "no such file"},
		{"all pass", []string{"--http", ok.URL, "--tcp", ln.Addr().String(), "--file", fresh, "--timeout", "1s"}, true, ""},
		{"one of many fails", []string{"--http", ok.URL, "--file", missing}, false, "file " + missing},
		{"no checks", nil, false, "no checks"},
		{"bad flag", []string{"--nope"}, false, "not defined"},
		{"bad max-age", []string{"--max-age", "nodelay"}, false, "PATH=DURATION"},
		{"bad url", []string{"--http", "ftp://x"}, false, "http URL"},
		{"extra args", []string{"--file", fresh, "extra"}, false, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runRole(context.Background(), "probe", tt.args, &roleEnv{
				lookup: func(string) (string, bool) { return "", false },
				stdout: &out, stderr: &out,
			})
			if tt.pass {
				if err != nil {
					t.Fatalf("err = %v, output %q", err, out.String())
				}
				return
			}
			var exit *ExitError
			if !errors.As(err, &exit) || exit.Code != 1 {
				t.Fatalf("err = %#v, want *ExitError code 1", err)
			}
			if !strings.Contains(out.String()+err.Error(), tt.want) {
				t.Fatalf("output %q / err %q lacks %q", out.String(), err, tt.want)
			}
		})
	}
}

func TestJobFailSleep(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "job-done")
	var out bytes.Buffer
	env := func(m map[string]string) *roleEnv {
		out.Reset()
		return &roleEnv{
			lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok },
			stdout: &out, stderr: &out,
		}
	}
	ctx := context.Background()

	if err := runRole(ctx, "job", []string{"migrate", "--all"}, env(map[string]string{"MARKER": marker})); err != nil {
		t.Fatalf("job: %v", err)
	}
	if out.String() != "migrate --all\n" {
		t.Fatalf("job output %q", out.String())
	}
	if b, _ := os.ReadFile(marker); string(b) != "migrate --all\n" {
		t.Fatalf("job marker %q", b)
	}

	var exit *ExitError
	err := runRole(ctx, "job", nil, env(map[string]string{"EXIT_CODE": "3"}))
	if !errors.As(err, &exit) || exit.Code != 3 {
		t.Fatalf("job exit = %v, want code 3", err)
	}
	err = runRole(ctx, "fail", nil, env(map[string]string{"DELAY": "10ms"}))
	if !errors.As(err, &exit) || exit.Code != 1 {
		t.Fatalf("fail = %v, want code 1", err)
	}
	if err := runRole(ctx, "job", nil, env(map[string]string{"EXIT_CODE": "x"})); err == nil || !strings.Contains(err.Error(), "EXIT_CODE") {
		t.Fatalf("bad EXIT_CODE err = %v", err)
	}

	ready := filepath.Join(dir, "ready")
	s := startRole(t, "sleep", map[string]string{"READY_FILE": ready}, nil)
	eventually(t, "sleep ready file", func() bool { return exists(ready) })
	if err := s.stop(t); err != nil {
		t.Fatalf("sleep stop: %v", err)
	}
}

func TestRunRoleUnknown(t *testing.T) {
	err := RunRole(context.Background(), "nope", nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "store") {
		t.Fatalf("err = %v, want the list of roles", err)
	}
	if got := Roles(); len(got) != len(roles) || got[0] != "api" {
		t.Fatalf("Roles() = %v", got)
	}
}
