package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// fakeEngine is an in-memory engine for unit tests: a container becomes
// healthy readyAfter[service] after it starts. The real engine is exercised
// by the e2e suite.
type fakeEngine struct {
	engine.Engine // methods not overridden panic: the runtime must not call them here

	mu         sync.Mutex
	images     map[string]string
	containers map[string]*fakeContainer
	creates    []string
	networks   []string
	volumes    []string
	readyAfter map[string]time.Duration
	never      map[string]bool
	jobExit    map[string]int // exit code of a job's container, which exits as it starts
	seq        int
}

type fakeContainer struct {
	info    engine.ContainerInfo
	service string
	spec    engine.ContainerSpec
}

func newFake() *fakeEngine {
	return &fakeEngine{
		images:     map[string]string{"img:1": "sha256:aaa"},
		containers: map[string]*fakeContainer{},
		readyAfter: map[string]time.Duration{},
		never:      map[string]bool{},
		jobExit:    map[string]int{},
	}
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
	if id, ok := f.images[ref]; ok {
		return engine.ImageInfo{ID: id}, nil
	}
	return engine.ImageInfo{}, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
}

func (f *fakeEngine) ListContainers(_ context.Context, labels map[string]string) ([]engine.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.ContainerInfo
	for _, c := range f.containers {
		out = append(out, c.info)
	}
	return out, nil
}

func (f *fakeEngine) EnsureNetwork(_ context.Context, n engine.NetworkSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.networks = append(f.networks, n.Name)
	return nil
}

func (f *fakeEngine) EnsureVolume(_ context.Context, v engine.VolumeSpec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.volumes = append(f.volumes, v.Name)
	return true, nil
}

func (f *fakeEngine) CreateContainer(_ context.Context, s engine.ContainerSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("id%d", f.seq)
	f.containers[s.Name] = &fakeContainer{service: s.Labels[engine.LabelService], spec: s, info: engine.ContainerInfo{
		ID: id, Name: s.Name, State: "created", Labels: s.Labels, CreatedAt: time.Now(),
	}}
	f.creates = append(f.creates, s.Name)
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
	if job := c.info.Labels[engine.LabelJob]; job != "" {
		c.info.State, c.info.Running, c.info.ExitCode = "exited", false, f.jobExit[job]
	}
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

func (f *fakeEngine) Exec(_ context.Context, id string, _ []string) (engine.ExecResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return engine.ExecResult{}, err
	}
	if f.never[c.service] || time.Since(c.info.StartedAt) < f.readyAfter[c.service] {
		return engine.ExecResult{ExitCode: 1, Output: "not ready"}, nil
	}
	return engine.ExecResult{}, nil
}

func (f *fakeEngine) PathExists(context.Context, string, string) (bool, error) { return true, nil }

func (f *fakeEngine) Logs(_ context.Context, id string, _ engine.LogOptions, w io.Writer) error {
	_, err := fmt.Fprintf(w, "log of %s\n", id)
	return err
}

func testApp() *model.Appliance {
	hc := &model.Healthcheck{Test: []string{"CMD", "check"}, Interval: 50 * time.Millisecond, Timeout: time.Second, Retries: 3, StartPeriod: 2 * time.Second}
	svc := func(name string, deps ...string) *model.Service {
		s := &model.Service{Name: name, Image: "img:1", Healthcheck: hc, DependsOn: map[string]model.Dependency{}, StopGracePeriod: time.Second}
		for _, d := range deps {
			s.DependsOn[d] = model.Dependency{Condition: model.ConditionHealthy, Required: true}
		}
		return s
	}
	return &model.Appliance{
		Name: "t",
		Services: map[string]*model.Service{
			"db":  svc("db"),
			"aux": svc("aux"),
			"api": svc("api", "db"),
			"web": svc("web", "api"),
		},
		Networks: map[string]*model.Network{"default": {Key: "default", Name: "t_default"}},
		Volumes:  map[string]*model.Volume{"data": {Key: "data", Name: "t_data"}},
	}
}

func newRuntime(t *testing.T, eng engine.Engine) *Runtime {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(eng, st, nil)
}

func TestUpGatesOnHealthAndRunsBranchesInParallel(t *testing.T) {
	f := newFake()
	f.readyAfter["db"] = 300 * time.Millisecond
	f.readyAfter["aux"] = 300 * time.Millisecond
	r := newRuntime(t, f)
	ctx := context.Background()
	var mu sync.Mutex
	var lines []string
	res, err := r.Up(ctx, testApp(), UpOptions{Progress: func(s, m string) {
		mu.Lock()
		lines = append(lines, s+": "+m)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := r.st.Events(ctx, "t", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]time.Time{}
	for _, e := range evs {
		key := e.Service + "/" + e.Kind
		if _, seen := at[key]; !seen {
			at[key] = e.At
		}
	}
	if !at["api/started"].After(at["db/healthy"]) || !at["web/started"].After(at["api/healthy"]) {
		t.Fatalf("start order broken: %v", at)
	}
	// db and aux are independent: both started before either got healthy.
	if !at["aux/started"].Before(at["db/healthy"]) || !at["db/started"].Before(at["aux/healthy"]) {
		t.Fatalf("independent services did not start in parallel: %v", at)
	}
	if len(res.Services) != 4 {
		t.Fatalf("result services: %+v", res.Services)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "web: waiting for api (service_healthy)") {
		t.Fatalf("progress lacks the wait line:\n%s", strings.Join(lines, "\n"))
	}

	// A second Up adopts everything: no container is created again.
	before := len(f.creates)
	if _, err := r.Up(ctx, testApp(), UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(f.creates) != before {
		t.Fatalf("second up created %v", f.creates[before:])
	}
	// A changed service is recreated, the others kept.
	app := testApp()
	app.Services["web"].Environment = map[string]string{"NEW": "1"}
	if _, err := r.Up(ctx, app, UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := f.creates[before:]; len(got) != 1 || got[0] != "t-web" {
		t.Fatalf("recreated %v, want [t-web]", got)
	}
}

func TestUpFailsNamingTheServiceAndSkipsDependants(t *testing.T) {
	f := newFake()
	f.never["api"] = true
	r := newRuntime(t, f)
	_, err := r.Up(context.Background(), testApp(), UpOptions{})
	var se *ServiceError
	if !errors.As(err, &se) || se.Service != "api" {
		t.Fatalf("error = %v, want a ServiceError for api", err)
	}
	for _, want := range []string{`service "api" did not become healthy`, "last health check: exit 1", "not ready", "log of"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
	for _, c := range f.creates {
		if c == "t-web" {
			t.Fatal("web was created although api never became healthy")
		}
	}
	if _, err := r.st.ActiveRevision(context.Background(), "t"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed first start left an active revision: %v", err)
	}
}

func TestPreflightCreatesNothing(t *testing.T) {
	f := newFake()
	r := newRuntime(t, f)
	app := testApp()
	app.Services["web"].Image = "missing:1"
	app.Services["api"].Ulimits = map[string]model.Ulimit{"nofile": {Soft: 1 << 40, Hard: 1 << 40}}
	_, err := r.Up(context.Background(), app, UpOptions{})
	var pe *PreflightError
	if !errors.As(err, &pe) || len(pe.Problems) != 2 {
		t.Fatalf("error = %v, want a PreflightError with 2 problems", err)
	}
	if len(f.creates)+len(f.networks)+len(f.volumes) != 0 {
		t.Fatalf("preflight failure created %v %v %v", f.creates, f.networks, f.volumes)
	}
}
