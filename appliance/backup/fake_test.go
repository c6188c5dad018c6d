package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
)

// fakeEngine is an in-memory engine: volumes are directories under a temp
// dir, helper containers run RunHelper in this process on them, service
// containers only change state, and hooks answer canned output. Methods it
// does not override panic (the embedded nil interface): a test fails when
// an operation touches what it must not.
type fakeEngine struct {
	engine.Engine

	mu         sync.Mutex
	t          *testing.T
	root       string
	volumes    map[string]string // name -> dir
	containers map[string]*fakeContainer
	calls      []string
	seq        int
	// hookOut is what a backup hook writes; hookCode its exit code.
	hookOut  string
	hookCode int
	// restored receives what restore hooks read.
	restored bytes.Buffer
	// failTar makes the helper's tar fail.
	failTar bool
	// canPause makes PauseContainer work.
	canPause bool
}

type fakeContainer struct {
	info   engine.ContainerInfo
	spec   engine.ContainerSpec
	volDir string // helpers: the mounted volume's directory
}

func newFakeEngine(t *testing.T) *fakeEngine {
	return &fakeEngine{t: t, root: t.TempDir(), volumes: map[string]string{}, containers: map[string]*fakeContainer{}, hookOut: "-- dump\nCREATE TABLE t;\n"}
}

func (f *fakeEngine) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeEngine) called(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// addVolume creates a volume directory with files.
func (f *fakeEngine) addVolume(name string, files map[string]string) string {
	dir := filepath.Join(f.root, "vol-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	for p, content := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(content), 0o640); err != nil {
			f.t.Fatal(err)
		}
	}
	f.volumes[name] = dir
	return dir
}

// addRunning adds a running service container.
func (f *fakeEngine) addRunning(app, svc string) {
	name := runtime.ContainerName(app, svc)
	f.containers[name] = &fakeContainer{info: engine.ContainerInfo{ID: "id-" + name, Name: name, State: "running", Running: true,
		Labels: map[string]string{engine.LabelAppliance: app, engine.LabelService: svc}}}
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
	if strings.Contains(ref, "missing") {
		return engine.ImageInfo{}, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	return engine.ImageInfo{ID: "sha256:" + ref, Names: []string{ref}}, nil
}

func (f *fakeEngine) ListVolumes(_ context.Context, labels map[string]string) ([]engine.VolumeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.VolumeInfo
	for name, dir := range f.volumes {
		out = append(out, engine.VolumeInfo{Name: name, Mountpoint: dir})
	}
	return out, nil
}

func (f *fakeEngine) EnsureVolume(_ context.Context, v engine.VolumeSpec) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("ensure-volume %s", v.Name)
	if _, ok := f.volumes[v.Name]; ok {
		return false, nil
	}
	dir := filepath.Join(f.root, "vol-"+v.Name)
	f.volumes[v.Name] = dir
	return true, os.MkdirAll(dir, 0o755)
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
		ok := true
		for k, v := range labels {
			if c.info.Labels[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, c.info)
		}
	}
	return out, nil
}

func (f *fakeEngine) CreateContainer(_ context.Context, s engine.ContainerSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("c%d", f.seq)
	c := &fakeContainer{spec: s, info: engine.ContainerInfo{ID: id, Name: s.Name, State: "created", Labels: s.Labels}}
	for _, m := range s.Mounts {
		if m.Type == "volume" {
			c.volDir = f.volumes[m.Source]
		}
	}
	f.containers[s.Name] = c
	f.record("create %s", s.Name)
	return id, nil
}

func (f *fakeEngine) StartContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.info.Running, c.info.State, c.info.StartedAt = true, "running", time.Now()
	f.record("start %s", c.info.Name)
	return nil
}

func (f *fakeEngine) StopContainer(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.info.Running, c.info.State = false, "exited"
	f.record("stop %s", c.info.Name)
	return nil
}

func (f *fakeEngine) PauseContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	if !f.canPause {
		return errors.New("can not pause containers on rootless containers with cgroup V1")
	}
	c.info.State = "paused"
	f.record("pause %s", c.info.Name)
	return nil
}

func (f *fakeEngine) UnpauseContainer(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.find(id)
	if err != nil {
		return err
	}
	c.info.State = "running"
	f.record("unpause %s", c.info.Name)
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
	f.record("remove %s", c.info.Name)
	return nil
}

func (f *fakeEngine) Logs(context.Context, string, engine.LogOptions, io.Writer) error { return nil }

func (f *fakeEngine) Exec(context.Context, string, []string) (engine.ExecResult, error) {
	return engine.ExecResult{ExitCode: 0}, nil
}

func (f *fakeEngine) PathExists(context.Context, string, string) (bool, error) { return true, nil }

func (f *fakeEngine) EnsureNetwork(context.Context, engine.NetworkSpec) error { return nil }

func (f *fakeEngine) ExecStream(ctx context.Context, id string, cmd []string, s engine.ExecIO) (int, error) {
	f.mu.Lock()
	c, err := f.find(id)
	f.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if !c.info.Running {
		return -1, errors.New("container state improper")
	}
	stdout, stderr := s.Stdout, s.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	f.mu.Lock()
	f.record("exec %s %s", c.info.Name, strings.Join(cmd, " "))
	f.mu.Unlock()
	switch {
	case cmd[0] == helperPath:
		args := slices.Clone(cmd[2:])
		if args[0] == "tar" && f.failTar {
			fmt.Fprintln(stderr, "tar: disk on fire")
			return 1, nil
		}
		// The helper sees the volume at its target; here that is the
		// volume's directory.
		for i, a := range args {
			if a == c.spec.Mounts[0].Target {
				args[i] = c.volDir
			}
		}
		if err := RunHelper(ctx, args, s.Stdin, stdout, stderr); err != nil {
			fmt.Fprintln(stderr, err)
			return 1, nil
		}
		return 0, nil
	case cmd[0] == "pg_dumpall":
		io.WriteString(stdout, f.hookOut)
		if f.hookCode != 0 {
			fmt.Fprintln(stderr, "pg_dumpall: connection refused")
		}
		return f.hookCode, nil
	case cmd[0] == "psql":
		f.mu.Lock()
		defer f.mu.Unlock()
		_, err := io.Copy(&f.restored, s.Stdin)
		return 0, err
	}
	return 127, nil
}

// testApp is an appliance with a database (backup hook with restore), a
// file service writing a volume without a hook, and a reader mounting it
// read-only.
func testApp() *model.Appliance {
	return &model.Appliance{
		Name: "shop",
		Services: map[string]*model.Service{
			"db": {Name: "db", Image: "pg:15", Restart: model.RestartAlways, StopGracePeriod: time.Second, Role: model.RoleStateful,
				Mounts: []model.Mount{{Type: model.MountVolume, Source: "pgdata", Target: "/var/lib/postgresql/data"}},
				Backup: &model.BackupHook{Command: []string{"pg_dumpall", "-U", "postgres"}, Restore: []string{"psql", "-U", "postgres"}}},
			"files": {Name: "files", Image: "files:1", Restart: model.RestartAlways, StopGracePeriod: time.Second, Role: model.RoleStateful,
				Mounts:    []model.Mount{{Type: model.MountVolume, Source: "filedata", Target: "/data"}},
				DependsOn: map[string]model.Dependency{"db": {Condition: model.ConditionStarted, Required: true}}},
			"reader": {Name: "reader", Image: "files:1", Restart: model.RestartAlways, StopGracePeriod: time.Second, Role: model.RoleStateful,
				Mounts: []model.Mount{{Type: model.MountVolume, Source: "filedata", Target: "/ro", ReadOnly: true}}},
		},
		Volumes: map[string]*model.Volume{
			"pgdata":   {Key: "pgdata", Name: "shop_pgdata"},
			"filedata": {Key: "filedata", Name: "shop_filedata"},
		},
		Networks: map[string]*model.Network{"default": {Key: "default", Name: "shop_default"}},
	}
}

// env is a store with the test appliance deployed and a fake engine
// running it.
type env struct {
	st       *store.Store
	eng      *fakeEngine
	m        *Manager
	stateDir string
	app      *model.Appliance
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	stateDir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(stateDir, "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	app := testApp()
	hash, spec, err := runtime.SpecHash(app)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateRevision(ctx, store.Revision{Appliance: app.Name, Spec: spec, SpecHash: hash, Status: store.RevisionActive,
		Images: map[string]string{"db": "sha256:pg:15", "files": "sha256:files:1", "reader": "sha256:files:1"}}); err != nil {
		t.Fatal(err)
	}
	eng := newFakeEngine(t)
	eng.addVolume("shop_pgdata", map[string]string{"PG_VERSION": "15\n", "base/1/1234": "rows"})
	eng.addVolume("shop_filedata", map[string]string{"a.txt": "alpha\n", "sub/b.bin": strings.Repeat("b", 100000)})
	for _, s := range []string{"db", "files", "reader"} {
		eng.addRunning(app.Name, s)
	}
	os.MkdirAll(filepath.Join(stateDir, "secrets", "shop"), 0o700)
	os.WriteFile(filepath.Join(stateDir, "secrets", "shop", "db-password"), []byte("s3cret"), 0o600)
	os.MkdirAll(filepath.Join(stateDir, "secrets", "other"), 0o700)
	os.WriteFile(filepath.Join(stateDir, "secrets", "other", "key"), []byte("not ours"), 0o600)
	os.MkdirAll(filepath.Join(stateDir, "proxy", "caddy"), 0o700)
	os.Chmod(filepath.Join(stateDir, "proxy"), 0o755)
	os.WriteFile(filepath.Join(stateDir, "proxy", "ca-root.crt"), []byte("CERT"), 0o644)
	os.WriteFile(filepath.Join(stateDir, "proxy", "caddy", "ca.key"), []byte("KEY"), 0o600)
	rt := runtime.New(eng, st, nil)
	return &env{st: st, eng: eng, m: New(eng, st, rt, nil), stateDir: stateDir, app: app}
}

func (e *env) backup(t *testing.T, opts Options) (*Result, error) {
	t.Helper()
	opts.Appliance = "shop"
	opts.StateDir = e.stateDir
	return e.m.Backup(context.Background(), opts)
}
