package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
)

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Snapshot is the snapshot directory. Required.
	Snapshot string
	// StateDir receives the snapshot's secrets and proxy files. Required.
	StateDir string
	// StopRunning stops the appliance when it runs; without it Restore
	// refuses (ErrRunning) and changes nothing.
	StopRunning bool
	// Timeout bounds bringing the appliance up at the end (0: each
	// service's own health rules).
	Timeout time.Duration
	// HelperBinary is the static outpost binary run in helper containers;
	// default this process's executable.
	HelperBinary string
	// Progress receives progress events; nil discards them.
	Progress ProgressFunc
	// UpProgress receives the start's per-service progress lines.
	UpProgress runtime.ProgressFunc
	// BeforeChange, when set, is called once every check has passed and
	// right before the first change (stopping the appliance). The daemon
	// stops supervising there.
	BeforeChange func()
}

// RestoreResult reports a restore.
type RestoreResult struct {
	Appliance string `json:"appliance"`
	Snapshot  string `json:"snapshot"`
	// SnapshotRevision is the revision recorded in the snapshot; Revision
	// the revision the appliance now runs (the same ID on the box that
	// made the snapshot, a new one elsewhere).
	SnapshotRevision int64 `json:"snapshot_revision"`
	Revision         int64 `json:"revision"`
	// Volumes restored, with how: "copy" (from the tar) or "hook" (emptied,
	// then reloaded by the service's restore hook).
	Volumes map[string]string `json:"volumes"`
	// Hooks are the services whose restore hooks ran.
	Hooks    []string               `json:"hooks,omitempty"`
	State    []string               `json:"state,omitempty"`
	Services []runtime.ServiceState `json:"services"`
	Warnings []string               `json:"warnings,omitempty"`
	Duration time.Duration          `json:"duration"`
	// Definition is the restored definition (what now runs).
	Definition *model.Appliance `json:"-"`
}

// Restore brings an appliance back to a snapshot: it verifies every
// checksum and that every image is in local storage before touching
// anything; refuses while the appliance runs unless StopRunning (then stops
// it); restores each volume from its copy (owners and modes as they were
// inside the user namespace), or, for volumes written by services whose
// backup hook has a restore command, empties them and reloads the hook
// output through that command in a temporary container of the service;
// puts the secrets and proxy files back into the state directory; and
// starts the recorded definition health-gated (runtime.Up), which records
// it as the active revision.
//
// It works on a fresh state directory with nothing but the snapshot and the
// images (loaded from a bundle or a registry beforehand).
func (m *Manager) Restore(ctx context.Context, opts RestoreOptions) (*RestoreResult, error) {
	begin := time.Now()
	progress := opts.Progress
	if progress == nil {
		progress = func(Event) {}
	}
	if opts.StateDir == "" {
		return nil, errors.New("restore: no state directory")
	}
	dir, err := filepath.Abs(opts.Snapshot)
	if err != nil {
		return nil, err
	}

	// 1. Everything that can be checked, before touching anything.
	man, err := ReadManifest(dir)
	if err != nil {
		return nil, fmt.Errorf("restore refused, nothing was changed: %w", err)
	}
	progress(Event{Step: "verify", Item: man.Name, Message: "checking every file against the manifest", Total: man.Size()})
	if _, err := verify(dir, man, progress); err != nil {
		return nil, fmt.Errorf("restore refused, nothing was changed: %w", err)
	}
	app, err := readDefinition(dir)
	if err != nil {
		return nil, fmt.Errorf("restore refused, nothing was changed: %w", err)
	}
	if app.Name != man.Appliance {
		return nil, fmt.Errorf("restore refused, nothing was changed: the definition is of %q, the manifest of %q", app.Name, man.Appliance)
	}
	res := &RestoreResult{Appliance: app.Name, Snapshot: dir, SnapshotRevision: man.Revision, Volumes: map[string]string{}}
	if err := m.preflightImages(ctx, dir, app, res); err != nil {
		return nil, fmt.Errorf("restore refused, nothing was changed: %w", err)
	}
	bin, err := helperBinary(opts.HelperBinary)
	if err != nil {
		return nil, err
	}
	release, err := m.st.AcquireLock(ctx, lockName(app.Name), "outpost restore")
	if err != nil {
		return nil, fmt.Errorf("another backup or restore of %s is running: %w", app.Name, err)
	}
	defer release()
	removeStaleHelpers(ctx, m.eng, app.Name)
	running, err := m.runningContainers(ctx, app.Name)
	if err != nil {
		return nil, err
	}
	if len(running) > 0 && !opts.StopRunning {
		return nil, fmt.Errorf("restore refused, nothing was changed: %w (%s); stop it first (`outpost down`) or pass --stop",
			ErrRunning, strings.Join(running, ", "))
	}

	// 2. Changes.
	if opts.BeforeChange != nil {
		opts.BeforeChange()
	}
	m.event(ctx, app.Name, "", "restore-started", dir)
	if len(running) > 0 {
		if err := m.stopAll(ctx, app, progress); err != nil {
			return nil, err
		}
	}
	hookFor := map[string]HookEntry{}
	for _, h := range man.Hooks {
		if len(h.Restore) > 0 {
			hookFor[h.Service] = h
		}
	}
	for _, v := range man.Volumes {
		if err := m.restoreVolume(ctx, dir, app, v, hookFor, bin, progress, res); err != nil {
			return nil, fmt.Errorf("restoring volume %s: %w; the appliance is stopped — fix the cause and restore again", v.Name, err)
		}
	}
	if err := m.restoreState(dir, man, opts.StateDir, res); err != nil {
		return nil, fmt.Errorf("%w; the appliance is stopped — fix the cause and restore again", err)
	}
	// The snapshot's definition holds markers for the secrets; their
	// values are the files just restored.
	if app, err = m.rt.WithSecrets(app); err != nil {
		return nil, fmt.Errorf("reading the restored secrets: %w; the appliance is stopped — fix the cause and restore again", err)
	}
	for _, name := range sortedKeys(hookFor) {
		if err := m.runRestoreHook(ctx, dir, app, hookFor[name], progress); err != nil {
			return nil, fmt.Errorf("restoring service %s from its backup hook output: %w; the appliance is stopped — fix the cause and restore again", name, err)
		}
		res.Hooks = append(res.Hooks, name)
	}

	// 3. The recorded definition, started health-gated. Install jobs do
	// not run again: the data is not new.
	progress(Event{Step: "up", Message: "starting the recorded definition"})
	up, err := m.rt.Up(ctx, app, runtime.UpOptions{Timeout: opts.Timeout, Progress: opts.UpProgress, Operation: model.JobAlways})
	if err != nil {
		return nil, fmt.Errorf("the data is restored but the appliance did not come up: %w", err)
	}
	res.Revision, res.Services, res.Definition = up.Revision, up.Services, app
	res.Warnings = append(res.Warnings, man.Warnings...)
	res.Duration = time.Since(begin)
	m.event(ctx, app.Name, "", "restored", fmt.Sprintf("from %s (revision %d) as revision %d in %s", dir, man.Revision, up.Revision, res.Duration.Round(time.Millisecond)))
	progress(Event{Step: "up", Done: true, Message: fmt.Sprintf("revision %d healthy", up.Revision)})
	return res, nil
}

func readDefinition(dir string) (*model.Appliance, error) {
	b, err := os.ReadFile(filepath.Join(dir, DefinitionFile))
	if err != nil {
		return nil, fmt.Errorf("reading the definition: %w", err)
	}
	var app model.Appliance
	if err := json.Unmarshal(b, &app); err != nil {
		return nil, fmt.Errorf("decoding the definition: %w", err)
	}
	if err := app.Validate(); err != nil {
		return nil, fmt.Errorf("the snapshot's definition is not valid for this outpost: %w", err)
	}
	return &app, nil
}

// preflightImages checks every service's image is in local storage (and
// notes where it differs from the one recorded) and every bind-mount
// source exists.
func (m *Manager) preflightImages(ctx context.Context, dir string, app *model.Appliance, res *RestoreResult) error {
	var rec RevisionRecord
	if b, err := os.ReadFile(filepath.Join(dir, RevisionFile)); err == nil {
		_ = json.Unmarshal(b, &rec)
	}
	var missing []string
	for _, name := range app.ServiceNames() {
		ref := app.Services[name].Image
		img, err := m.eng.ImageInspect(ctx, ref)
		if errors.Is(err, engine.ErrNotFound) {
			missing = append(missing, fmt.Sprintf("%s (service %s)", ref, name))
			continue
		}
		if err != nil {
			return fmt.Errorf("inspecting image %s: %w", ref, err)
		}
		if want := rec.Images[name].ID; want != "" && want != img.ID {
			res.Warnings = append(res.Warnings, fmt.Sprintf("service %s: image %s is %s here, the snapshot recorded %s", name, ref, shortID(img.ID), shortID(want)))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("images not in local storage: %s; load them first (`outpost bundle load` or `podman load`) — Outpost never pulls", strings.Join(missing, ", "))
	}
	// Bind-mount sources are not part of a snapshot: they must exist.
	var binds []string
	for _, name := range app.ServiceNames() {
		for _, mt := range app.Services[name].Mounts {
			if mt.Type != model.MountBind {
				continue
			}
			if _, err := os.Stat(mt.Source); err != nil {
				binds = append(binds, fmt.Sprintf("%s (service %s)", mt.Source, name))
			}
		}
	}
	if len(binds) > 0 {
		return fmt.Errorf("bind-mount sources missing: %s; a snapshot holds volumes, not host paths — put them in place first", strings.Join(binds, ", "))
	}
	return nil
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// runningContainers lists the appliance's running containers.
func (m *Manager) runningContainers(ctx context.Context, app string) ([]string, error) {
	cs, err := m.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app})
	if err != nil {
		return nil, fmt.Errorf("listing containers of %s: %w", app, err)
	}
	var out []string
	for _, c := range cs {
		if c.Running {
			out = append(out, c.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// stopAll stops the appliance in reverse dependency order (the deployed
// definition's when there is one), then anything of it still running.
func (m *Manager) stopAll(ctx context.Context, snapApp *model.Appliance, progress ProgressFunc) error {
	app := snapApp
	if dep, _, err := m.rt.Deployed(ctx, snapApp.Name); err == nil {
		app = dep
	}
	progress(Event{Step: "stop", Message: "stopping the appliance"})
	if err := m.rt.Stop(ctx, app, runtime.StopOptions{}); err != nil {
		return fmt.Errorf("stopping %s: %w", app.Name, err)
	}
	cs, err := m.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app.Name})
	if err != nil {
		return fmt.Errorf("listing containers of %s: %w", app.Name, err)
	}
	for _, c := range cs {
		if !c.Running {
			continue
		}
		if err := m.eng.StopContainer(ctx, c.ID, model.DefaultStopGrace); err != nil {
			return fmt.Errorf("stopping %s: %w", c.Name, err)
		}
	}
	progress(Event{Step: "stop", Done: true})
	return nil
}

// restoreVolume recreates a volume if needed and refills it.
func (m *Manager) restoreVolume(ctx context.Context, dir string, app *model.Appliance, v VolumeEntry, hookFor map[string]HookEntry, bin string, progress ProgressFunc, res *RestoreResult) error {
	spec := engine.VolumeSpec{Name: v.Name}
	if !v.External {
		spec.Labels = map[string]string{engine.LabelAppliance: app.Name, engine.LabelVolume: v.Key}
		if mv := app.Volumes[v.Key]; mv != nil {
			for k, val := range mv.Labels {
				spec.Labels[k] = val
			}
		}
	}
	if _, err := m.eng.EnsureVolume(ctx, spec); err != nil {
		return err
	}
	byHook := len(v.HookServices) > 0
	for _, s := range v.HookServices {
		if _, ok := hookFor[s]; !ok {
			byHook = false
		}
	}
	tarPath := filepath.Join(dir, filepath.FromSlash(v.File))
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	image, target := helperFor(app, v.Key)
	h, err := startHelper(ctx, m.eng, app.Name, image, v.Name, target, bin)
	if err != nil {
		return err
	}
	defer h.remove()
	var warnings []string
	if byHook {
		// The copy was taken live; the hook output is the consistent one.
		// Empty the volume with its root's owner and mode, so the service
		// initialises it and the restore hook loads the data.
		root, err := readRootHeader(f)
		if err != nil {
			return err
		}
		progress(Event{Step: "restore-volume", Item: v.Name, Message: "emptying for the restore hook of " + strings.Join(v.HookServices, ", ")})
		warnings, err = h.run(ctx, nil, nil, "reset", target, strconv.Itoa(root.Uid), strconv.Itoa(root.Gid), strconv.FormatInt(root.Mode&0o7777, 8))
		if err != nil {
			return err
		}
		res.Volumes[v.Name] = "hook"
	} else {
		progress(Event{Step: "restore-volume", Item: v.Name, Message: "restoring from " + v.File, Total: fi.Size()})
		r := &progressReader{r: f, report: func(n int64) {
			progress(Event{Step: "restore-volume", Item: v.Name, Bytes: n, Total: fi.Size()})
		}}
		warnings, err = h.run(ctx, r, nil, "untar", target)
		if err != nil {
			return err
		}
		res.Volumes[v.Name] = "copy"
	}
	for _, w := range warnings {
		res.Warnings = append(res.Warnings, "volume "+v.Name+": "+w)
	}
	progress(Event{Step: "restore-volume", Item: v.Name, Done: true, Bytes: fi.Size(), Total: fi.Size()})
	return nil
}

// restoreState writes the snapshot's state files back into the state
// directory (0700 directories, 0600 files), replacing existing ones.
func (m *Manager) restoreState(dir string, man *Manifest, stateDirPath string, res *RestoreResult) error {
	for _, d := range man.Dirs {
		dst := filepath.Join(stateDirPath, filepath.FromSlash(strings.TrimPrefix(d.Path, stateDir+"/")))
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return fmt.Errorf("restoring %s: %w", dst, err)
		}
		if err := os.Chmod(dst, os.FileMode(d.Mode&0o777)); err != nil {
			return fmt.Errorf("restoring %s: %w", dst, err)
		}
	}
	for _, f := range man.Files {
		rel, ok := strings.CutPrefix(f.Path, stateDir+"/")
		if !ok {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("reading %s: %w", f.Path, err)
		}
		dst := filepath.Join(stateDirPath, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("restoring %s: %w", dst, err)
		}
		tmp := dst + ".restore-tmp"
		if err := writeFileSync(tmp, data); err != nil {
			return fmt.Errorf("restoring %s: %w", dst, err)
		}
		if f.Mode != 0 {
			if err := os.Chmod(tmp, os.FileMode(f.Mode&0o777)); err != nil {
				return fmt.Errorf("restoring %s: %w", dst, err)
			}
		}
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("restoring %s: %w", dst, err)
		}
		res.State = append(res.State, rel)
	}
	return nil
}

// runRestoreHook starts a temporary container of the service (its image,
// environment and mounts; no ports, no networks), waits until it is
// healthy, feeds the hook output to the restore command, and stops it.
func (m *Manager) runRestoreHook(ctx context.Context, dir string, app *model.Appliance, h HookEntry, progress ProgressFunc) error {
	svc := app.Services[h.Service]
	if svc == nil {
		return fmt.Errorf("the snapshot's definition has no service %s", h.Service)
	}
	spec := runtime.ContainerSpec(app, svc, 0, nil)
	spec.Name = app.Name + "-restore-" + svc.Name
	spec.Ports, spec.Networks, spec.ExtraHosts = nil, nil, nil
	spec.Labels = map[string]string{engine.LabelAppliance: app.Name, LabelHelper: "restore"}
	if old, err := m.eng.InspectContainer(ctx, spec.Name); err == nil {
		if err := m.eng.RemoveContainer(ctx, old.ID); err != nil {
			return fmt.Errorf("removing the leftover %s: %w", spec.Name, err)
		}
	}
	progress(Event{Step: "restore-hook", Item: svc.Name, Message: "starting a temporary container"})
	id, err := m.eng.CreateContainer(ctx, spec)
	if err != nil {
		return err
	}
	defer func() {
		sctx := context.WithoutCancel(ctx)
		_ = m.eng.StopContainer(sctx, id, svc.StopGracePeriod)
		_ = m.eng.RemoveContainer(sctx, id)
	}()
	if err := m.eng.StartContainer(ctx, id); err != nil {
		return err
	}
	if err := waitHealthy(ctx, m.eng, svc, id, 0); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(h.File)))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, _ := f.Stat()
	progress(Event{Step: "restore-hook", Item: svc.Name, Message: "running " + strings.Join(h.Restore, " "), Total: fi.Size()})
	r := &progressReader{r: f, report: func(n int64) {
		progress(Event{Step: "restore-hook", Item: svc.Name, Bytes: n, Total: fi.Size()})
	}}
	stderr := &limitedBuffer{limit: 8 << 10}
	code, err := m.eng.ExecStream(ctx, id, h.Restore, engine.ExecIO{Stdin: r, Stdout: io.Discard, Stderr: stderr})
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("restore command %s exited with code %d: %s", strings.Join(h.Restore, " "), code, lastLines(stderr.String(), 5))
	}
	// A clean stop, so the data is on disk before the real container
	// starts on the same volume.
	if err := m.eng.StopContainer(ctx, id, svc.StopGracePeriod); err != nil {
		return fmt.Errorf("stopping the temporary container: %w", err)
	}
	progress(Event{Step: "restore-hook", Item: svc.Name, Done: true, Bytes: fi.Size(), Total: fi.Size()})
	return nil
}

// progressReader reports how much was read every reportEvery bytes.
type progressReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.last >= reportEvery {
		p.last = p.n
		p.report(p.n)
	}
	return n, err
}
