package checks

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// fakeEngine is an in-memory engine: containers run as soon as they
// start, probes pass unless the container's service is in failing, and
// every volume and network is tracked with its labels.
type fakeEngine struct {
	engine.Engine // unimplemented methods panic

	mu         sync.Mutex
	containers map[string]*fakeContainer
	volumes    map[string]map[string]string
	networks   map[string]map[string]string
	removedVol []string
	failing    map[string]bool // service → health probe fails
	noMarker   map[string]bool // path → missing
	seq        int
}

type fakeContainer struct {
	info engine.ContainerInfo
	spec engine.ContainerSpec
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{containers: map[string]*fakeContainer{}, volumes: map[string]map[string]string{},
		networks: map[string]map[string]string{}, failing: map[string]bool{}, noMarker: map[string]bool{}}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func (f *fakeEngine) find(id string) (*fakeContainer, error) {
	for _, c := range f.containers {
		if c.info.ID == id || c.info.Name == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("container %s: %w", id, engine.ErrNotFound)
}

func (f *fakeEngine) ImageInspect(_ context.Context, ref string) (engine.ImageInfo, error) {
	return engine.ImageInfo{ID: "sha256:" + ref}, nil
}

func (f *fakeEngine) EnsureNetwork(_ context.Context, n engine.NetworkSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.networks[n.Name] = n.Labels
	return nil
}

func (f *fakeEngine) RemoveNetwork(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.networks, name)
	return nil
}

func (f *fakeEngine) ListNetworks(_ context.Context, labels map[string]string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n, l := range f.networks {
		if hasLabels(l, labels) {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeEngine) EnsureVolume(_ context.Context, v engine.VolumeSpec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[v.Name]; ok {
		return false, nil
	}
	f.volumes[v.Name] = v.Labels
	return true, nil
}

func (f *fakeEngine) ListVolumes(_ context.Context, labels map[string]string) ([]engine.VolumeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.VolumeInfo
	for n, l := range f.volumes {
		if hasLabels(l, labels) {
			out = append(out, engine.VolumeInfo{Name: n, Labels: l})
		}
	}
	return out, nil
}

func (f *fakeEngine) RemoveVolume(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.volumes, name)
	f.removedVol = append(f.removedVol, name)
	return nil
}

func (f *fakeEngine) CreateContainer(_ context.Context, s engine.ContainerSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("c%d", f.seq)
	f.containers[s.Name] = &fakeContainer{spec: s, info: engine.ContainerInfo{ID: id, Name: s.Name, Image: s.Image, ImageID: "sha256:" + s.Image, State: "created", Labels: s.Labels}}
	return id, nil
}

func (f *fakeEngine) StartContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.info.State, c.info.Running, c.info.StartedAt = "running", true, time.Now()
	return nil
}

func (f *fakeEngine) StopContainer(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.info.State, c.info.Running = "exited", false
	return nil
}

func (f *fakeEngine) RemoveContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	delete(f.containers, c.info.Name)
	return nil
}

func (f *fakeEngine) InspectContainer(_ context.Context, id string) (engine.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return engine.ContainerInfo{}, err
	}
	return c.info, nil
}

func (f *fakeEngine) ListContainers(_ context.Context, labels map[string]string) ([]engine.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.ContainerInfo
	for _, c := range f.containers {
		if hasLabels(c.info.Labels, labels) {
			out = append(out, c.info)
		}
	}
	return out, nil
}

func (f *fakeEngine) Exec(_ context.Context, id string, cmd []string) (engine.ExecResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return engine.ExecResult{}, err
	}
	if f.failing[c.info.Labels[engine.LabelService]] {
		return engine.ExecResult{ExitCode: 1, Output: "connection refused"}, nil
	}
	// The probe helper: a target port 9999 is closed.
	if strings.Contains(strings.Join(cmd, " "), ":9999") {
		return engine.ExecResult{ExitCode: 1, Output: "probe failed: tcp: connection refused"}, nil
	}
	return engine.ExecResult{}, nil
}

func (f *fakeEngine) PathExists(_ context.Context, _ string, path string) (bool, error) {
	return !f.noMarker[path], nil
}

func (f *fakeEngine) Logs(_ context.Context, id string, _ engine.LogOptions, w io.Writer) error {
	_, err := fmt.Fprintf(w, "log line of %s\n", id)
	return err
}

// smokeApp is a production appliance "shop": db (with a volume) ← api.
func smokeApp(bind string, port uint16) *model.Appliance {
	hc := &model.Healthcheck{Test: []string{"CMD", "/outpost", "demo-role", "probe"}, Interval: time.Second, Timeout: time.Second, Retries: 1}
	return &model.Appliance{
		Name: "shop",
		Services: map[string]*model.Service{
			"db": {Name: "db", Image: "localhost/outpost-demo:latest", Healthcheck: hc, StopGracePeriod: time.Second,
				Mounts:       []model.Mount{{Type: model.MountVolume, Source: "data", Target: "/data"}, {Type: model.MountBind, Source: bind, Target: "/etc/shop"}},
				ReadyMarkers: []string{"/tmp/db-ready"}},
			"api": {Name: "api", Image: "localhost/outpost-demo:latest", Healthcheck: hc, StopGracePeriod: time.Second,
				Ports:     []model.Port{{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 8080, Protocol: "tcp"}},
				DependsOn: map[string]model.Dependency{"db": {Condition: model.ConditionHealthy, Required: true}}},
		},
		Volumes: map[string]*model.Volume{
			"data":   {Key: "data", Name: "shop_data"},
			"shared": {Key: "shared", Name: "company-shared", External: true},
		},
		Networks: map[string]*model.Network{"default": {Key: "default", Name: "shop_default"}},
		Checks: &model.Checks{Smoke: []model.SmokeCheck{
			{Name: "api-to-db", From: "api", Target: "db:5432"},
			{Name: "api-to-nowhere", From: "api", Target: "db:9999"},
		}},
	}
}

func TestTestDefinition(t *testing.T) {
	app := smokeApp("/etc/shop", 8080)
	app.Proxy = &model.Proxy{Sites: []string{"https://shop.local", "http://x:8080", ":80"}, HealthListen: "127.0.0.1:2020"}
	test, warnings, err := TestDefinition(app, "shop-smoke", 10000)
	if err != nil {
		t.Fatal(err)
	}
	if test.Name != "shop-smoke" || app.Name != "shop" {
		t.Fatalf("names: test %s, production %s", test.Name, app.Name)
	}
	if v := test.Volumes["data"]; v.Name != "shop-smoke_data" || v.Labels[engine.LabelTest] != "shop-smoke" {
		t.Errorf("data volume: %+v", v)
	}
	if v := test.Volumes["shared"]; v.Name != "shop-smoke_shared" || v.External {
		t.Errorf("an external production volume must be replaced by a test volume: %+v", v)
	}
	if app.Volumes["data"].Name != "shop_data" || app.Volumes["data"].Labels != nil {
		t.Errorf("the production definition was changed: %+v", app.Volumes["data"])
	}
	if n := test.Networks["default"].Name; n != "shop-smoke_default" {
		t.Errorf("network %s", n)
	}
	if p := test.Services["api"].Ports[0].HostPort; p != 18080 {
		t.Errorf("shifted port %d", p)
	}
	if l := test.Services["db"].Labels[engine.LabelTest]; l != "shop-smoke" {
		t.Errorf("service label %q", l)
	}
	wantSites := []string{"https://shop.local:10443", "http://x:18080", ":10080"}
	if strings.Join(test.Proxy.Sites, " ") != strings.Join(wantSites, " ") || test.Proxy.HealthListen != "127.0.0.1:12020" {
		t.Errorf("proxy: %v %s", test.Proxy.Sites, test.Proxy.HealthListen)
	}
	joined := strings.Join(warnings, "\n")
	if !strings.Contains(joined, "company-shared") || !strings.Contains(joined, "bind-mounts /etc/shop read-write") {
		t.Errorf("warnings: %s", joined)
	}
	if _, _, err := TestDefinition(app, "x", 60000); err == nil {
		t.Error("a port beyond 65535 must be an error")
	}
}

// The smoke test creates only test-labelled things and removes only
// those: the production appliance's volume, and a volume of the test
// project's name that lacks the test label, survive.
func TestSmokeTouchesOnlyTestVolumes(t *testing.T) {
	fromRetryDelay = time.Millisecond
	eng := newFakeEngine()
	// The production appliance's volume, with data.
	eng.volumes["shop_data"] = map[string]string{engine.LabelAppliance: "shop", engine.LabelVolume: "data"}
	// Leftovers of an earlier, interrupted smoke run.
	eng.volumes["shop-smoke_data"] = map[string]string{engine.LabelAppliance: "shop-smoke", engine.LabelTest: "shop-smoke"}
	eng.containers["shop-smoke-db"] = &fakeContainer{info: engine.ContainerInfo{ID: "old", Name: "shop-smoke-db", Running: true,
		Labels: map[string]string{engine.LabelAppliance: "shop-smoke", engine.LabelTest: "shop-smoke", engine.LabelService: "db"}}}

	var created []string
	rep, err := Smoke(context.Background(), SmokeOptions{Appliance: smokeApp(t.TempDir(), 0), Engine: eng, StateDir: t.TempDir(),
		Progress: func(svc, msg string) {
			if msg == "starting existing container" || strings.HasPrefix(msg, "configuration") {
				created = append(created, svc)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	byCheck := map[string]Status{}
	for _, r := range rep.Results {
		byCheck[r.Subject+" "+r.Check] = r.Status
	}
	want := map[string]Status{
		"db healthy": Pass, "api healthy": Pass, "db ready-markers": Pass,
		"api-to-db connect": Pass, "api-to-nowhere connect": Fail, "shop-smoke teardown": Pass,
		"shop-smoke isolation": Warn,
	}
	for k, st := range want {
		if byCheck[k] != st {
			t.Errorf("%s: %s, want %s (all: %v)", k, byCheck[k], st, byCheck)
		}
	}
	for _, r := range rep.Results {
		if r.Subject == "api-to-nowhere" && !strings.Contains(strings.Join(r.Notes, "\n"), "last log lines of db") {
			t.Errorf("a failing connection shows no logs of its target: %+v", r)
		}
	}
	if _, ok := eng.volumes["shop_data"]; !ok {
		t.Fatal("the production volume was removed")
	}
	sort.Strings(eng.removedVol)
	if strings.Join(eng.removedVol, ",") != "shop-smoke_data,shop-smoke_data,shop-smoke_shared" {
		t.Errorf("removed volumes: %v", eng.removedVol)
	}
	if len(eng.containers) != 0 || len(eng.networks) != 0 {
		t.Errorf("left behind: containers %v, networks %v", eng.containers, eng.networks)
	}

	// A volume named like the test project but not labelled as its test
	// volume means a real appliance has that name: refuse to run.
	eng.volumes["shop-smoke_data"] = map[string]string{engine.LabelAppliance: "shop-smoke"}
	if _, err := Smoke(context.Background(), SmokeOptions{Appliance: smokeApp(t.TempDir(), 0), Engine: eng, StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a smoke-test project") {
		t.Fatalf("err = %v", err)
	}
	if _, ok := eng.volumes["shop-smoke_data"]; !ok {
		t.Fatal("a volume without the test label was removed")
	}
}

func TestSmokeFailureNamesTheService(t *testing.T) {
	eng := newFakeEngine()
	eng.failing["db"] = true
	rep, err := Smoke(context.Background(), SmokeOptions{Appliance: smokeApp(t.TempDir(), 0), Engine: eng, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var db, api *Result
	for i := range rep.Results {
		r := &rep.Results[i]
		switch r.Subject + " " + r.Check {
		case "db healthy":
			db = r
		case "api healthy":
			api = r
		}
	}
	if db == nil || db.Status != Fail || !strings.Contains(db.Detail, "db") || !strings.Contains(strings.Join(db.Notes, "\n"), "last log lines") {
		t.Fatalf("db: %+v", db)
	}
	if api == nil || api.Status != Skip || !strings.Contains(api.Detail, "db failed first") {
		t.Fatalf("api: %+v", api)
	}
	if !rep.Failed() {
		t.Error("report passes")
	}

	eng = newFakeEngine()
	eng.noMarker["/tmp/db-ready"] = true
	rep, err = Smoke(context.Background(), SmokeOptions{Appliance: smokeApp(t.TempDir(), 0), Engine: eng, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Failed() || !strings.Contains(fmt.Sprint(rep.Results), "db") {
		t.Errorf("a missing ready marker passed: %+v", rep.Results)
	}
}

func TestShiftAddress(t *testing.T) {
	for in, want := range map[string]string{
		"https://app.local":       "https://app.local:10443",
		"https://app.local:8443":  "https://app.local:18443",
		"http://app.local":        "http://app.local:10080",
		":80":                     ":10080",
		"127.0.0.1:2020":          "127.0.0.1:12020",
		"https://localhost:18443": "https://localhost:28443",
	} {
		got, err := shiftAddress(in, 10000)
		if err != nil || got != want {
			t.Errorf("shiftAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
