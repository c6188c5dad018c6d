// Package backup makes and restores consistent snapshots of an appliance:
// each backup hook's output (e.g. `pg_dumpall` run by exec in the database
// container, streamed to disk), every named volume's contents (copied by a
// helper container inside the rootless user namespace, with the services
// that write to it and have no hook paused or stopped for the copy), the
// recorded definition, revision and image digests, the secrets and the
// proxy's CA and certificates from the state directory, and a manifest with
// the sha256 of every file, written last.
//
// A snapshot is a directory, <dir>/<appliance>-<UTC time>, written as
// <dir>/.<name>.partial and renamed once its manifest is on disk: a
// directory without a valid manifest is never listed, pruned or restored.
// Copy it elsewhere (rsync, tar) as it is; see docs/backup.md.
//
// The package records snapshots in the store and never deletes a volume;
// Restore empties and refills the volumes the snapshot holds, and only after
// every checksum was verified.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/health"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/plan"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
)

// Triggers say what asked for a snapshot.
const (
	TriggerManual   = "manual"
	TriggerSchedule = "schedule"
	TriggerUpgrade  = "upgrade"
)

// DirName is the snapshot directory below the state directory.
const DirName = "backups"

// StateSubdirs are the state directory's subdirectories a snapshot holds
// when they exist: the appliance's generated secrets (secrets/<appliance>)
// and the embedded proxy's CA, keys and certificates (proxy/, and caddy/
// of older layouts), so TLS clients keep trusting a restored appliance.
var StateSubdirs = []string{"secrets", "proxy", "caddy"}

// Manager makes, lists, verifies, prunes and restores snapshots.
type Manager struct {
	eng engine.Engine
	st  *store.Store
	rt  *runtime.Runtime
	log *slog.Logger
}

// New returns a Manager. log may be nil.
func New(eng engine.Engine, st *store.Store, rt *runtime.Runtime, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{eng: eng, st: st, rt: rt, log: log}
}

// Event is one progress report. Streaming steps report Bytes as they go
// (Total is 0 when unknown) and end with Done.
type Event struct {
	// Step is "hook", "quiesce", "volume", "state", "manifest", "verify",
	// "restore-volume", "restore-hook", "stop" or "up".
	Step string `json:"step"`
	// Item is the service or volume concerned, if any.
	Item    string `json:"item,omitempty"`
	Message string `json:"message,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Total   int64  `json:"total,omitempty"`
	Done    bool   `json:"done,omitempty"`
}

// ProgressFunc receives progress events; it must not block for long.
type ProgressFunc func(Event)

// Options configure Backup.
type Options struct {
	// Appliance is the deployed appliance to snapshot. Required.
	Appliance string
	// StateDir is Outpost's state directory: secrets/ and caddy/ are read
	// from it, and snapshots go to its backups/ unless Dir is set. Required.
	StateDir string
	// Dir is the directory the snapshot is written into (created 0700);
	// default x-outpost.backup.dir, else <StateDir>/backups.
	Dir string
	// Quiesce is how services without a backup hook are held still while
	// their volumes are copied: model.QuiesceAuto (pause where the host
	// can, else stop), QuiescePause, QuiesceStop or QuiesceNone. Default
	// x-outpost.backup.quiesce, else auto.
	Quiesce string
	// SkipVerify skips reading the snapshot back against its manifest
	// after writing it (verification is on by default).
	SkipVerify bool
	// Trigger is recorded with the snapshot; default TriggerManual.
	Trigger string
	// OutpostVersion is recorded in the manifest.
	OutpostVersion string
	// HelperBinary is the static outpost binary run in helper containers;
	// default this process's executable.
	HelperBinary string
	// Progress receives progress events; nil discards them.
	Progress ProgressFunc
	// Suspend, when set, is called once before the first service is paused
	// or stopped, and the function it returns once they all run again. The
	// daemon uses it to hold supervision, which would restart them.
	Suspend func() (resume func())
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Result reports a complete snapshot.
type Result struct {
	Appliance string `json:"appliance"`
	Name      string `json:"name"`
	Path      string `json:"path"`
	Revision  int64  `json:"revision"`
	// Size is the total size of the snapshot's files in bytes.
	Size int64 `json:"size"`
	// Files is how many files the manifest lists.
	Files int `json:"files"`
	// Hooks are the services whose backup hooks ran.
	Hooks []string `json:"hooks,omitempty"`
	// Volumes are the volumes copied, with how.
	Volumes map[string]string `json:"volumes,omitempty"`
	// Held are the services paused or stopped for a copy, with how.
	Held     map[string]string `json:"held,omitempty"`
	Warnings []string          `json:"warnings,omitempty"`
	Verified bool              `json:"verified"`
	Duration time.Duration     `json:"duration"`
}

// ErrRunning is returned (wrapped) by Restore when the appliance runs and
// StopRunning was not given.
var ErrRunning = errors.New("the appliance is running")

func (o *Options) defaults() error {
	if o.Appliance == "" {
		return errors.New("backup: no appliance named")
	}
	if o.StateDir == "" {
		return errors.New("backup: no state directory")
	}
	if !model.ValidQuiesce(o.Quiesce) {
		return fmt.Errorf("quiesce mode %q is not one of auto, pause, stop, none", o.Quiesce)
	}
	if o.Trigger == "" {
		o.Trigger = TriggerManual
	}
	if o.Progress == nil {
		o.Progress = func(Event) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// lockName serialises backups and restores of one appliance.
func lockName(app string) string { return "backup:" + app }

// snapshotName is "<appliance>-<UTC time>", unique in dir.
func snapshotName(dir, app string, now time.Time) string {
	base := app + "-" + now.UTC().Format("20060102T150405Z")
	name := base
	for i := 2; ; i++ {
		_, err1 := os.Lstat(filepath.Join(dir, name))
		_, err2 := os.Lstat(filepath.Join(dir, partialName(name)))
		if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) {
			return name
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
}

// partialName is the directory a snapshot is written in before it is
// complete.
func partialName(name string) string { return "." + name + ".partial" }

// Backup writes one snapshot of the appliance (see the package comment)
// and records it in the store. On any failure the partial snapshot is
// removed and the error says which step failed; services it paused or
// stopped are resumed in every case. It is the verb upgrades call before
// changing data: a returned error means there is no snapshot.
func (m *Manager) Backup(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	begin := opts.Now()
	release, err := m.st.AcquireLock(ctx, lockName(opts.Appliance), "outpost backup")
	if err != nil {
		return nil, fmt.Errorf("another backup or restore of %s is running: %w", opts.Appliance, err)
	}
	defer release()

	app, rev, err := m.rt.Deployed(ctx, opts.Appliance)
	if err != nil {
		return nil, fmt.Errorf("reading the deployed definition of %s: %w", opts.Appliance, err)
	}
	removeStaleHelpers(ctx, m.eng, app.Name)
	// The appliance's x-outpost.backup gives the defaults.
	if p := app.Backup; p != nil {
		if opts.Dir == "" {
			opts.Dir = p.Dir
		}
		if opts.Quiesce == "" {
			opts.Quiesce = p.Quiesce
		}
	}
	if opts.Quiesce == "" {
		opts.Quiesce = model.QuiesceAuto
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(opts.StateDir, DirName)
	}
	if opts.Dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, fmt.Errorf("backup directory: %w", err)
	}
	bin, err := helperBinary(opts.HelperBinary)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the backup directory %s: %w", opts.Dir, err)
	}
	name := snapshotName(opts.Dir, app.Name, begin)
	final := filepath.Join(opts.Dir, name)
	work := filepath.Join(opts.Dir, partialName(name))
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, fmt.Errorf("creating the snapshot directory %s: %w", work, err)
	}
	recID, err := m.st.StartBackup(ctx, store.Backup{Appliance: app.Name, Name: name, Path: final, Revision: rev.ID, Trigger: opts.Trigger, StartedAt: begin})
	if err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	b := &snapshotter{m: m, opts: opts, app: app, rev: rev, dir: work, bin: bin,
		man: &Manifest{Format: Format, Name: name, Appliance: app.Name, Version: app.Version, Revision: rev.ID,
			SpecHash: rev.SpecHash, OutpostVersion: opts.OutpostVersion, Trigger: opts.Trigger, Quiesce: opts.Quiesce, CreatedAt: begin.UTC()},
		res: &Result{Appliance: app.Name, Name: name, Path: final, Revision: rev.ID, Volumes: map[string]string{}, Held: map[string]string{}},
	}
	err = b.run(ctx)
	if err == nil && !opts.SkipVerify {
		err = b.verify()
	}
	if err == nil {
		err = os.Rename(work, final)
		if err == nil {
			err = syncDir(opts.Dir)
		}
	}
	if err != nil {
		os.RemoveAll(work)
		fctx := context.WithoutCancel(ctx)
		if ferr := m.st.FinishBackup(fctx, recID, store.BackupFailed, 0, err.Error()); ferr != nil {
			m.log.Warn("recording the failed backup failed", "err", ferr)
		}
		m.event(fctx, app.Name, "", "backup-failed", firstLine(err.Error()))
		return nil, fmt.Errorf("backup of %s failed, no snapshot was kept: %w", app.Name, err)
	}
	res := b.res
	res.Size = b.man.Size()
	res.Files = len(b.man.Files) + 1
	res.Warnings = b.man.Warnings
	if err := m.st.FinishBackup(ctx, recID, store.BackupComplete, res.Size, ""); err != nil {
		return nil, fmt.Errorf("snapshot %s is complete but recording it failed: %w", final, err)
	}
	if !opts.SkipVerify {
		if err := m.st.SetBackupVerified(ctx, final, opts.Now()); err != nil {
			m.log.Warn("recording the verification failed", "err", err)
		}
		res.Verified = true
	}
	res.Duration = opts.Now().Sub(begin)
	m.event(ctx, app.Name, "", "backup", fmt.Sprintf("snapshot %s: %d bytes in %s", final, res.Size, res.Duration.Round(time.Millisecond)))
	return res, nil
}

// snapshotter writes one snapshot.
type snapshotter struct {
	m    *Manager
	opts Options
	app  *model.Appliance
	rev  store.Revision
	dir  string
	bin  string
	man  *Manifest
	res  *Result

	// suspended is the resume function once supervision is held.
	resume    func()
	noPause   bool // pausing failed once: stop from then on (auto)
	suspendMu sync.Mutex
}

func (b *snapshotter) warn(msg string) {
	b.man.Warnings = append(b.man.Warnings, msg)
	b.m.log.Warn("backup", "appliance", b.app.Name, "warning", msg)
}

func (b *snapshotter) run(ctx context.Context) (err error) {
	defer func() {
		if b.resume != nil {
			b.resume()
		}
	}()
	if err := b.writeDefinition(ctx); err != nil {
		return err
	}
	if err := b.runHooks(ctx); err != nil {
		return err
	}
	if err := b.copyVolumes(ctx); err != nil {
		return err
	}
	if err := b.copyState(); err != nil {
		return err
	}
	b.man.FinishedAt = b.opts.Now().UTC()
	b.opts.Progress(Event{Step: "manifest", Message: fmt.Sprintf("%d files, %d bytes", len(b.man.Files), b.man.Size())})
	return writeManifest(b.dir, b.man)
}

// verify reads the written snapshot back against its manifest, before it
// is renamed into place: one that does not read back as written is never
// complete.
func (b *snapshotter) verify() error {
	size := b.man.Size()
	b.opts.Progress(Event{Step: "verify", Message: "reading the snapshot back", Total: size})
	problems, err := verifyFiles(b.dir, b.man, func(done, total int64) {
		b.opts.Progress(Event{Step: "verify", Bytes: done, Total: total})
	})
	if err != nil {
		return fmt.Errorf("verifying the snapshot: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the snapshot does not read back as written (%s: %s); check the disk: %w", problems[0].Path, problems[0].Problem, ErrCorrupt)
	}
	b.opts.Progress(Event{Step: "verify", Done: true, Bytes: size, Total: size})
	return nil
}

// RevisionRecord is revision.json: the recorded revision and, per
// service, the image reference, ID and digest it ran.
type RevisionRecord struct {
	ID        int64                   `json:"id"`
	Appliance string                  `json:"appliance"`
	Version   string                  `json:"version,omitempty"`
	SpecHash  string                  `json:"spec_hash"`
	Status    string                  `json:"status"`
	CreatedAt time.Time               `json:"created_at"`
	AppliedAt time.Time               `json:"applied_at,omitzero"`
	Images    map[string]ImageRecord  `json:"images"`
	Volumes   map[string]model.Volume `json:"volumes,omitempty"`
}

// ImageRecord is one service's image.
type ImageRecord struct {
	Ref    string   `json:"ref"`
	ID     string   `json:"id"`
	Digest string   `json:"digest,omitempty"`
	Names  []string `json:"names,omitempty"`
}

func (b *snapshotter) writeDefinition(ctx context.Context) error {
	spec := b.rev.Spec
	if len(spec) == 0 {
		var err error
		if spec, err = json.Marshal(b.app); err != nil {
			return fmt.Errorf("encoding the definition: %w", err)
		}
	}
	if err := b.writeSmall(DefinitionFile, spec); err != nil {
		return err
	}
	rec := RevisionRecord{ID: b.rev.ID, Appliance: b.app.Name, Version: b.rev.Version, SpecHash: b.rev.SpecHash,
		Status: string(b.rev.Status), CreatedAt: b.rev.CreatedAt, AppliedAt: b.rev.AppliedAt, Images: map[string]ImageRecord{}}
	for _, name := range b.app.ServiceNames() {
		ref := b.app.Services[name].Image
		ir := ImageRecord{Ref: ref, ID: b.rev.Images[name]}
		if img, err := b.m.eng.ImageInspect(ctx, ref); err == nil {
			ir.Digest, ir.Names = img.Digest, img.Names
			if ir.ID == "" {
				ir.ID = img.ID
			}
		}
		rec.Images[name] = ir
	}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the revision: %w", err)
	}
	return b.writeSmall(RevisionFile, append(data, '\n'))
}

func (b *snapshotter) writeSmall(rel string, data []byte) error {
	w, err := createFile(b.dir, rel, nil)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.abort()
		return fmt.Errorf("writing %s: %w", rel, err)
	}
	fe, err := w.finish()
	if err != nil {
		return err
	}
	b.man.Files = append(b.man.Files, fe)
	return nil
}

// runHooks streams each running service's backup hook output to a file.
func (b *snapshotter) runHooks(ctx context.Context) error {
	for _, name := range b.app.ServiceNames() {
		svc := b.app.Services[name]
		if svc.Backup == nil || len(svc.Backup.Command) == 0 {
			continue
		}
		c, err := b.m.eng.InspectContainer(ctx, runtime.ContainerName(b.app.Name, name))
		if err != nil && !errors.Is(err, engine.ErrNotFound) {
			return fmt.Errorf("inspecting service %s: %w", name, err)
		}
		if err != nil || !c.Running {
			b.warn(fmt.Sprintf("service %s is not running: its backup hook was skipped and its volumes are copied as they are on disk", name))
			continue
		}
		rel := hooksDir + "/" + name + ".out"
		b.opts.Progress(Event{Step: "hook", Item: name, Message: "running " + strings.Join(svc.Backup.Command, " ")})
		w, err := createFile(b.dir, rel, func(n int64) { b.opts.Progress(Event{Step: "hook", Item: name, Bytes: n}) })
		if err != nil {
			return err
		}
		stderr := &limitedBuffer{limit: 8 << 10}
		code, err := b.m.eng.ExecStream(ctx, c.ID, svc.Backup.Command, engine.ExecIO{Stdout: w, Stderr: stderr})
		if err != nil {
			w.abort()
			return fmt.Errorf("running the backup hook of service %s: %w", name, err)
		}
		if code != 0 {
			w.abort()
			return fmt.Errorf("the backup hook of service %s (%s) exited with code %d: %s; fix the hook in x-outpost services.%s.backup",
				name, strings.Join(svc.Backup.Command, " "), code, lastLines(stderr.String(), 5), name)
		}
		fe, err := w.finish()
		if err != nil {
			return err
		}
		if fe.Size == 0 {
			b.warn(fmt.Sprintf("the backup hook of service %s wrote nothing", name))
		}
		b.man.Files = append(b.man.Files, fe)
		b.man.Hooks = append(b.man.Hooks, HookEntry{Service: name, File: rel, Command: svc.Backup.Command, Restore: svc.Backup.Restore})
		b.res.Hooks = append(b.res.Hooks, name)
		b.opts.Progress(Event{Step: "hook", Item: name, Bytes: fe.Size, Done: true})
	}
	return nil
}

// volumePlan is what copying one volume needs.
type volumePlan struct {
	key, name string
	external  bool
	users     []string // services mounting it
	hookUsers []string // writers with a hook that ran
	hold      []string // running writers without a hook: pause or stop them
	running   bool     // some user runs
}

// planVolumes decides, per existing volume, which services must be held.
func (b *snapshotter) planVolumes(ctx context.Context) ([]volumePlan, error) {
	existing, err := b.m.eng.ListVolumes(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	have := map[string]bool{}
	for _, v := range existing {
		have[v.Name] = true
	}
	hooked := map[string]bool{}
	for _, h := range b.man.Hooks {
		hooked[h.Service] = true
	}
	running := map[string]bool{}
	for _, name := range b.app.ServiceNames() {
		c, err := b.m.eng.InspectContainer(ctx, runtime.ContainerName(b.app.Name, name))
		if err == nil && c.Running {
			running[name] = true
		}
	}
	var plans []volumePlan
	for _, key := range sortedKeys(b.app.Volumes) {
		v := b.app.Volumes[key]
		if !have[v.Name] {
			if !v.Legacy {
				b.warn(fmt.Sprintf("volume %s does not exist: not copied", v.Name))
			}
			continue
		}
		p := volumePlan{key: key, name: v.Name, external: v.External}
		for _, name := range b.app.ServiceNames() {
			for _, mt := range b.app.Services[name].Mounts {
				if mt.Type != model.MountVolume || mt.Source != key {
					continue
				}
				if !slices.Contains(p.users, name) {
					p.users = append(p.users, name)
				}
				if running[name] {
					p.running = true
				}
				if mt.ReadOnly || !running[name] {
					continue
				}
				if hooked[name] {
					if !slices.Contains(p.hookUsers, name) {
						p.hookUsers = append(p.hookUsers, name)
					}
				} else if !slices.Contains(p.hold, name) {
					p.hold = append(p.hold, name)
				}
			}
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// copyVolumes copies every volume, holding its hookless writers still.
func (b *snapshotter) copyVolumes(ctx context.Context) error {
	plans, err := b.planVolumes(ctx)
	if err != nil {
		return err
	}
	for _, g := range groupByHold(plans) {
		held, err := b.hold(ctx, g.hold)
		if err == nil {
			for _, p := range g.volumes {
				if err = b.copyVolume(ctx, p, held); err != nil {
					break
				}
			}
		}
		if rerr := b.unhold(ctx, held); err == nil {
			err = rerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// holdGroup is a set of volumes whose copies share the services held.
type holdGroup struct {
	volumes []volumePlan
	hold    []string
}

// groupByHold joins volumes that share services to hold, so each service
// is paused or stopped once, for all its volumes together.
func groupByHold(plans []volumePlan) []holdGroup {
	var groups []holdGroup
	for _, p := range plans {
		merged := -1
		for i := range groups {
			if overlaps(groups[i].hold, p.hold) {
				if merged < 0 {
					groups[i].volumes = append(groups[i].volumes, p)
					groups[i].hold = union(groups[i].hold, p.hold)
					merged = i
				} else {
					groups[merged].volumes = append(groups[merged].volumes, groups[i].volumes...)
					groups[merged].hold = union(groups[merged].hold, groups[i].hold)
					groups = append(groups[:i], groups[i+1:]...)
					break
				}
			}
		}
		if merged < 0 {
			groups = append(groups, holdGroup{volumes: []volumePlan{p}, hold: slices.Clone(p.hold)})
		}
	}
	for i := range groups {
		sort.Strings(groups[i].hold)
	}
	return groups
}

func overlaps(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// heldService is a service paused or stopped for a copy.
type heldService struct {
	name, id, how string
}

// hold pauses or stops services (dependants first) per the quiesce mode.
func (b *snapshotter) hold(ctx context.Context, services []string) ([]heldService, error) {
	if len(services) == 0 || b.opts.Quiesce == model.QuiesceNone {
		return nil, nil
	}
	b.suspendMu.Lock()
	if b.resume == nil && b.opts.Suspend != nil {
		b.resume = b.opts.Suspend()
	}
	b.suspendMu.Unlock()
	var held []heldService
	for _, name := range stopOrder(b.app, services) {
		svc := b.app.Services[name]
		c, err := b.m.eng.InspectContainer(ctx, runtime.ContainerName(b.app.Name, name))
		if err != nil || !c.Running {
			continue
		}
		mode := b.opts.Quiesce
		if mode == model.QuiesceAuto {
			mode = model.QuiescePause
			if b.noPause {
				mode = model.QuiesceStop
			}
		}
		why := ""
		if mode == model.QuiescePause {
			perr := b.m.eng.PauseContainer(ctx, c.ID)
			if perr == nil {
				held = append(held, heldService{name, c.ID, CopyPaused})
				b.opts.Progress(Event{Step: "quiesce", Item: name, Message: "paused for the copy"})
				b.m.event(ctx, b.app.Name, name, "backup-paused", "held for the copy of its volumes")
				continue
			}
			if b.opts.Quiesce == model.QuiescePause {
				return held, fmt.Errorf("pausing service %s: %w; use quiesce stop (or auto) on this host", name, perr)
			}
			b.m.log.Info("pausing is not possible here; stopping instead", "service", name, "err", perr)
			b.noPause = true
			why = ", pausing is not possible here"
		}
		b.opts.Progress(Event{Step: "quiesce", Item: name, Message: fmt.Sprintf("stopping for the copy (up to %s%s)", svc.StopGracePeriod, why)})
		if err := b.m.eng.StopContainer(ctx, c.ID, svc.StopGracePeriod); err != nil {
			return held, fmt.Errorf("stopping service %s for the copy: %w", name, err)
		}
		held = append(held, heldService{name, c.ID, CopyStopped})
		b.m.event(ctx, b.app.Name, name, "backup-stopped", "held for the copy of its volumes")
	}
	for _, h := range held {
		b.res.Held[h.name] = h.how
	}
	return held, nil
}

// unhold resumes held services (dependencies first) and waits until the
// stopped ones are healthy again.
func (b *snapshotter) unhold(ctx context.Context, held []heldService) error {
	ctx = context.WithoutCancel(ctx) // a canceled backup still restarts what it stopped
	var errs []error
	for i := len(held) - 1; i >= 0; i-- {
		h := held[i]
		if h.how == CopyPaused {
			if err := b.m.eng.UnpauseContainer(ctx, h.id); err != nil {
				errs = append(errs, fmt.Errorf("unpausing service %s: %w; run `outpost up`", h.name, err))
			}
			continue
		}
		b.opts.Progress(Event{Step: "quiesce", Item: h.name, Message: "starting again"})
		if err := b.m.eng.StartContainer(ctx, h.id); err != nil {
			errs = append(errs, fmt.Errorf("starting service %s again: %w; run `outpost up`", h.name, err))
			continue
		}
		b.m.event(ctx, b.app.Name, h.name, "backup-started", "copy of its volumes done")
		if err := waitHealthy(ctx, b.m.eng, b.app.Services[h.name], h.id, 0); err != nil {
			b.warn(fmt.Sprintf("service %s did not become healthy again after the copy: %v", h.name, err))
		}
	}
	return errors.Join(errs...)
}

// stopOrder sorts services dependants first (the reverse of start order).
func stopOrder(app *model.Appliance, services []string) []string {
	dag, err := plan.Graph(app, nil)
	if err != nil {
		return services
	}
	var out []string
	levels := dag.Levels()
	for i := len(levels) - 1; i >= 0; i-- {
		for _, n := range levels[i] {
			if slices.Contains(services, n) {
				out = append(out, n)
			}
		}
	}
	for _, s := range services {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// copyVolume streams one volume's tar through a helper into the snapshot.
func (b *snapshotter) copyVolume(ctx context.Context, p volumePlan, held []heldService) error {
	how := CopyIdle
	switch {
	case len(p.hold) > 0 && b.opts.Quiesce == model.QuiesceNone:
		how = CopyLive
	case len(p.hold) > 0:
		how = CopyStopped
		for _, h := range held {
			if slices.Contains(p.hold, h.name) && h.how == CopyPaused {
				how = CopyPaused
			}
		}
	case len(p.hookUsers) > 0:
		how = CopyHook
	case p.running:
		how = CopyIdle // only readers run
	}
	image, target := helperFor(b.app, p.key)
	rel := volumesDir + "/" + p.name + ".tar"
	b.opts.Progress(Event{Step: "volume", Item: p.name, Message: "copying (" + how + ")"})
	h, err := startHelper(ctx, b.m.eng, b.app.Name, image, p.name, target, b.bin)
	if err != nil {
		return err
	}
	defer h.remove()
	// An estimate of the copy's size, for the progress bar.
	var total int64
	var sizeOut strings.Builder
	if _, err := h.run(ctx, nil, &sizeOut, "size", target); err == nil {
		total, _ = strconv.ParseInt(strings.TrimSpace(sizeOut.String()), 10, 64)
	}
	w, err := createFile(b.dir, rel, func(n int64) { b.opts.Progress(Event{Step: "volume", Item: p.name, Bytes: n, Total: total}) })
	if err != nil {
		return err
	}
	warnings, err := h.run(ctx, nil, w, "tar", target)
	if err != nil {
		w.abort()
		return fmt.Errorf("copying volume %s: %w", p.name, err)
	}
	for _, wmsg := range warnings {
		b.warn("volume " + p.name + ": " + wmsg)
	}
	fe, err := w.finish()
	if err != nil {
		return err
	}
	b.man.Files = append(b.man.Files, fe)
	b.man.Volumes = append(b.man.Volumes, VolumeEntry{Key: p.key, Name: p.name, File: rel, Services: p.users,
		External: p.external, Copy: how, HookServices: p.hookUsers})
	b.res.Volumes[p.name] = how
	b.opts.Progress(Event{Step: "volume", Item: p.name, Bytes: fe.Size, Done: true})
	return nil
}

// copyState copies the state directory's secrets and proxy files that
// concern the appliance.
func (b *snapshotter) copyState() error {
	for _, sub := range StateSubdirs {
		src := filepath.Join(b.opts.StateDir, sub)
		if sub == "secrets" {
			// Only this appliance's secrets (secrets.Dir).
			src = filepath.Join(src, b.app.Name)
		}
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue
		}
		err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			relToState, err := filepath.Rel(b.opts.StateDir, p)
			if err != nil {
				return err
			}
			rel := stateDir + "/" + filepath.ToSlash(relToState)
			info, err := d.Info()
			if err != nil {
				return err
			}
			if d.IsDir() {
				b.man.Dirs = append(b.man.Dirs, DirEntry{Path: rel, Mode: uint32(info.Mode().Perm())})
				return nil
			}
			if !d.Type().IsRegular() {
				return nil // sockets, lock files' links: nothing to keep
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := b.writeSmall(rel, data); err != nil {
				return err
			}
			b.man.Files[len(b.man.Files)-1].Mode = uint32(info.Mode().Perm())
			return nil
		})
		if err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		b.opts.Progress(Event{Step: "state", Item: sub, Done: true})
	}
	return nil
}

// waitHealthy waits until a started container is healthy by its service's
// checks (running, without checks), within timeout (0: the service's start
// period plus its retries, at least a minute).
func waitHealthy(ctx context.Context, eng engine.Engine, svc *model.Service, id string, timeout time.Duration) error {
	sp := health.FromService(svc)
	if timeout <= 0 {
		timeout = time.Minute
		if sp != nil {
			timeout = max(timeout, sp.StartPeriod+time.Duration(sp.Retries+1)*(sp.Interval+sp.Timeout))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := health.NewTracker(sp, time.Now())
	for i := 0; ; i++ {
		c, err := eng.InspectContainer(ctx, id)
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", svc.Name, err)
		}
		if !c.Running {
			return fmt.Errorf("service %s exited with code %d", svc.Name, c.ExitCode)
		}
		if sp == nil {
			return nil
		}
		res := health.Probe(ctx, eng, id, sp)
		switch tr.Observe(res) {
		case health.Healthy:
			return nil
		case health.Unhealthy:
			return fmt.Errorf("service %s is unhealthy: %s", svc.Name, strings.TrimSpace(res.Output))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service %s not healthy within %s: last check: %s", svc.Name, timeout, strings.TrimSpace(res.Output))
		case <-time.After(tr.NextDelay(i)):
		}
	}
}

func (m *Manager) event(ctx context.Context, app, service, kind, msg string) {
	if err := m.st.AddEvent(context.WithoutCancel(ctx), store.Event{Appliance: app, Service: service, Kind: kind, Message: msg}); err != nil {
		m.log.Warn("recording event failed", "kind", kind, "err", err)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
