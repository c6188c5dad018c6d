// Package volumes owns what happens to an appliance's volumes between
// revisions: volume migrations (copy a volume into another inside the
// rootless user namespace, verify, mark, keep the source), legacy marks for
// volumes a new revision no longer mounts, and the guarded removal of legacy
// volumes (`outpost volumes prune --legacy`).
//
// It never removes a volume except in Prune, and Prune removes only what
// its guards allow and the caller confirmed.
package volumes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// Sentinel errors callers branch on (wrapped).
var (
	// ErrPopulated: the migration's destination holds data that no
	// migration of Outpost put there; nothing was changed.
	ErrPopulated = errors.New("destination volume is already populated")
	// ErrNoSource: the migration's source volume does not exist (a fresh
	// installation never had it); nothing was changed.
	ErrNoSource = errors.New("source volume does not exist")
	// ErrDiverged: the destination holds this migration's completion
	// marker, but both volumes were written since the copy (the old
	// revision ran again after a rolled-back upgrade whose new revision
	// had already used the copy); nothing was changed.
	ErrDiverged = errors.New("source and destination volumes both changed since the copy")
)

// CopyCommand is the hidden outpost subcommand the helper container runs.
const CopyCommand = "volume-copy"

// LabelHelper marks helper containers, so a leaked one can be found.
const LabelHelper = "io.outpost.helper"

// helperPath is where the outpost binary is mounted in the helper.
const helperPath = "/.outpost-helper/outpost"

// Mount points of the two volumes inside the helper.
const (
	srcMount = "/.outpost-src"
	dstMount = "/.outpost-dst"
)

// MigrationResult describes one volume migration.
type MigrationResult struct {
	// Files counts the entries copied below the volume's root (files,
	// directories, symlinks...); Bytes sums the regular files' sizes.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// Checksum is the verified digest of source and destination trees.
	Checksum string `json:"checksum"`
	// Skipped is true when the destination already held the completion
	// marker of this migration: nothing was copied.
	Skipped bool `json:"skipped"`
	// Duration is how long Migrate took.
	Duration time.Duration `json:"duration"`
}

// Record is the store's record of a completed migration, kept under the
// meta key RecordKey; Prune reads it to know a legacy volume's replacement
// was verified.
type Record struct {
	Marker
	// Appliance is the appliance the volumes belong to.
	Appliance string `json:"appliance"`
	// FromKey and ToKey are the Compose keys.
	FromKey string `json:"from_key"`
	ToKey   string `json:"to_key"`
}

// RecordKey is the store meta key of the migration of volume from into to
// (Podman names) of appliance app.
func RecordKey(app, from, to string) string {
	return "volume-migration/" + app + "/" + from + "/" + to
}

// Migrate copies volume m.From into m.To for app (Compose keys resolved to
// the app's volume names).
//
// The copy runs in a short-lived helper container (an image of the
// appliance, running this outpost binary as root of the user namespace)
// with the source mounted read-only, so owners and modes are those the
// containers see. It preserves owners, modes, times, symlinks and hard
// links, verifies that source and destination have the same entry count
// and tree checksum, then writes the completion marker
// `.outpost-migrated-from-<source>` (JSON, see Marker) in the destination's
// root and a Record in the store. The source is never changed.
//
// A destination holding that marker is left alone (Skipped) while the
// source is unchanged since the copy; when the source changed (the old
// revision ran again after a rolled-back upgrade) and the destination did
// not, it is copied again; when both changed, ErrDiverged. A destination
// holding anything else is refused with ErrPopulated; one holding an
// interrupted copy of this migration is emptied and copied again.
//
// A missing source is ErrNoSource, unless the store records this migration
// as done (the source was pruned since): then Skipped. The destination
// volume is created (and inventoried) when missing. Callers stop the
// services that write the source first: writes after the copy would not
// reach the destination.
func Migrate(ctx context.Context, eng engine.Engine, st *store.Store, app *model.Appliance, m model.VolumeMigration, log *slog.Logger) (MigrationResult, error) {
	start := time.Now()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	step := fmt.Sprintf("migrating volume %s into %s", m.From, m.To)
	from, to, err := resolve(app, m)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("%s: %w", step, err)
	}
	step = fmt.Sprintf("migrating volume %s into %s", from.Name, to.Name)
	existing, err := eng.ListVolumes(ctx, nil)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("%s: %w", step, err)
	}
	have := map[string]bool{}
	for _, v := range existing {
		have[v.Name] = true
	}
	if !have[from.Name] {
		// Migrated, then pruned as legacy: later releases may still
		// declare the migration.
		if rec, err := recorded(ctx, st, app.Name, from.Name, to.Name); err == nil && have[to.Name] {
			log.Info("volume migration already done; its source was removed since", "from", from.Name, "to", to.Name)
			return MigrationResult{Files: rec.Files, Bytes: rec.Bytes, Checksum: rec.Checksum, Skipped: true, Duration: time.Since(start)}, nil
		}
		return MigrationResult{}, fmt.Errorf("%s: %w: %s", step, ErrNoSource, from.Name)
	}
	if err := ensureDestination(ctx, eng, st, app, to, have[to.Name]); err != nil {
		return MigrationResult{}, fmt.Errorf("%s: %w", step, err)
	}
	bin, err := helperBinary()
	if err != nil {
		return MigrationResult{}, fmt.Errorf("%s: %w", step, err)
	}
	image := helperImage(app, m)
	if image == "" {
		return MigrationResult{}, fmt.Errorf("%s: the appliance has no service whose image could run the copy", step)
	}
	log.Info("migrating volume", "appliance", app.Name, "from", from.Name, "to", to.Name, "image", image)
	h, err := startHelper(ctx, eng, app.Name, image, bin, from.Name, to.Name)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("%s: %w", step, err)
	}
	defer h.remove()
	var out bytes.Buffer
	stderr := &tail{limit: 16 << 10}
	code, err := eng.ExecStream(ctx, h.id, []string{helperPath, CopyCommand,
		"--from", srcMount, "--to", dstMount, "--from-name", from.Name, "--to-name", to.Name},
		engine.ExecIO{Stdout: &out, Stderr: stderr})
	if err != nil {
		return MigrationResult{}, fmt.Errorf("%s: running the copy: %w", step, err)
	}
	if code != 0 {
		return MigrationResult{}, fmt.Errorf("%s: the copy failed (exit code %d): %s; the source is unchanged, run the migration again once fixed",
			step, code, strings.TrimSpace(stderr.String()))
	}
	var rep CopyReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		return MigrationResult{}, fmt.Errorf("%s: reading the copy's report: %w (%q)", step, err, out.String())
	}
	for _, w := range rep.Warnings {
		log.Warn("volume migration", "from", from.Name, "to", to.Name, "warning", w)
	}
	switch rep.Status {
	case StatusPopulated:
		return MigrationResult{}, fmt.Errorf("%s: %w: %s already holds %s and no marker of a migration from %s. "+
			"Nothing was changed and %s is kept. If %s's data is the one to keep, remove the migration from x-outpost volumes.migrations; "+
			"if it is a leftover, empty or remove %s (after checking it) and run the upgrade again",
			step, ErrPopulated, to.Name, strings.Join(rep.Entries, ", "), from.Name, from.Name, to.Name, to.Name)
	case StatusDiverged:
		return MigrationResult{}, fmt.Errorf("%s: %w (copied at %s). Nothing was changed and both are kept. "+
			"%s holds what the old revision wrote since; if the upgrade that copied it was rolled back, %s holds only the failed attempt's writes: "+
			"check it, then empty or remove %s and upgrade again",
			step, ErrDiverged, rep.Marker.CompletedAt.Format(time.RFC3339), from.Name, to.Name, to.Name)
	case StatusCopied, StatusSkipped:
	default:
		return MigrationResult{}, fmt.Errorf("%s: the copy reported status %q", step, rep.Status)
	}
	rec := Record{Marker: rep.Marker, Appliance: app.Name, FromKey: m.From, ToKey: m.To}
	data, err := json.Marshal(rec)
	if err != nil {
		return MigrationResult{}, err
	}
	if err := st.Set(ctx, RecordKey(app.Name, from.Name, to.Name), string(data)); err != nil {
		return MigrationResult{}, fmt.Errorf("%s: recording the verified copy: %w", step, err)
	}
	res := MigrationResult{Files: rep.Marker.Files, Bytes: rep.Marker.Bytes, Checksum: rep.Marker.Checksum,
		Skipped: rep.Status == StatusSkipped, Duration: time.Since(start)}
	if !res.Skipped {
		_ = st.AddEvent(ctx, store.Event{Appliance: app.Name, Kind: "volume-migrated",
			Message: fmt.Sprintf("%s -> %s: %d entries, %d bytes, %s", from.Name, to.Name, res.Files, res.Bytes, res.Checksum)})
	}
	log.Info("volume migrated", "from", from.Name, "to", to.Name, "files", res.Files, "bytes", res.Bytes,
		"checksum", res.Checksum, "skipped", res.Skipped, "duration", res.Duration)
	return res, nil
}

// recorded reads the store's record of a completed migration.
func recorded(ctx context.Context, st *store.Store, app, from, to string) (Record, error) {
	var rec Record
	data, err := st.Get(ctx, RecordKey(app, from, to))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal([]byte(data), &rec); err != nil {
		return rec, fmt.Errorf("decoding the record of migration %s -> %s: %w", from, to, err)
	}
	return rec, nil
}

// resolve maps the migration's keys to the app's volumes. A key the app
// does not declare is known as `<appliance>_<key>` (a legacy volume the new
// release no longer declares).
func resolve(app *model.Appliance, m model.VolumeMigration) (from, to *model.Volume, err error) {
	if m.From == "" || m.To == "" || m.From == m.To {
		return nil, nil, fmt.Errorf("a migration needs two different volumes (from %q, to %q)", m.From, m.To)
	}
	get := func(key string) *model.Volume {
		if v, ok := app.Volumes[key]; ok && v != nil {
			return v
		}
		return &model.Volume{Key: key, Name: app.Name + "_" + key}
	}
	from, to = get(m.From), get(m.To)
	if from.Name == to.Name {
		return nil, nil, fmt.Errorf("volumes %s and %s are the same Podman volume %s", m.From, m.To, from.Name)
	}
	return from, to, nil
}

// users lists the services of app mounting the volume key.
func users(app *model.Appliance, key string) []string {
	var out []string
	for _, name := range app.ServiceNames() {
		for _, mt := range app.Services[name].Mounts {
			if mt.Type == model.MountVolume && mt.Source == key {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// ensureDestination creates the destination volume when missing (an
// external one must exist) and records it in the inventory.
func ensureDestination(ctx context.Context, eng engine.Engine, st *store.Store, app *model.Appliance, to *model.Volume, exists bool) error {
	rec := store.Volume{Appliance: app.Name, Key: to.Key, Name: to.Name, Services: users(app, to.Key), External: to.External, CreatedBy: store.VolumeAdopted}
	if to.External && !exists {
		return fmt.Errorf("external volume %s does not exist: create it, then run the upgrade again", to.Name)
	}
	if !to.External {
		labels := map[string]string{engine.LabelAppliance: app.Name, engine.LabelVolume: to.Key}
		for k, v := range to.Labels {
			labels[k] = v
		}
		created, err := eng.EnsureVolume(ctx, engine.VolumeSpec{Name: to.Name, Labels: labels})
		if err != nil {
			return fmt.Errorf("creating volume %s: %w", to.Name, err)
		}
		if created {
			rec.CreatedBy = store.VolumeCreatedByOutpost
		}
	}
	if err := st.PutVolume(ctx, rec); err != nil {
		return err
	}
	return nil
}

// helperImage picks the image the copy runs in: that of the first service
// mounting the destination, else the source, else any service. The image
// only provides a root filesystem; the copy is the outpost binary.
func helperImage(app *model.Appliance, m model.VolumeMigration) string {
	for _, key := range []string{m.To, m.From} {
		if u := users(app, key); len(u) > 0 {
			return app.Services[u[0]].Image
		}
	}
	for _, name := range app.ServiceNames() {
		return app.Services[name].Image
	}
	return ""
}

// helperBinary is this static outpost binary, which the helper runs.
func helperBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the outpost binary for the helper container: %w", err)
	}
	abs, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", fmt.Errorf("finding the outpost binary for the helper container: %w", err)
	}
	return abs, nil
}

type helper struct {
	eng engine.Engine
	id  string
}

// startHelper starts an idle helper container with the source mounted
// read-only and the destination read-write.
func startHelper(ctx context.Context, eng engine.Engine, app, image, bin, from, to string) (*helper, error) {
	// A helper a killed migration left behind would hold the volumes.
	if old, err := eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app, LabelHelper: "volume-copy"}); err == nil {
		for _, c := range old {
			_ = eng.RemoveContainer(ctx, c.ID)
		}
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	spec := engine.ContainerSpec{
		Name:          fmt.Sprintf("%s-volume-copy-%s", app, hex.EncodeToString(suffix)),
		Image:         image,
		Entrypoint:    []string{helperPath},
		EntrypointSet: true,
		Command:       []string{CopyCommand, "--idle"},
		// Root of the user namespace: it reads every file the appliance's
		// containers own and gives each copy the same owner.
		User:       "0:0",
		WorkingDir: "/",
		Mounts: []engine.MountSpec{
			{Type: "volume", Source: from, Target: srcMount, ReadOnly: true},
			{Type: "volume", Source: to, Target: dstMount},
			{Type: "bind", Source: bin, Target: helperPath, ReadOnly: true},
		},
		StopTimeout: time.Second,
		Labels:      map[string]string{engine.LabelAppliance: app, LabelHelper: "volume-copy"},
	}
	id, err := eng.CreateContainer(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("creating the copy's helper container (image %s): %w", image, err)
	}
	h := &helper{eng: eng, id: id}
	if err := eng.StartContainer(ctx, id); err != nil {
		h.remove()
		return nil, fmt.Errorf("starting the copy's helper container: %w", err)
	}
	for i := 0; ; i++ {
		c, err := eng.InspectContainer(ctx, id)
		if err == nil && c.Running {
			return h, nil
		}
		if err == nil && c.State != "created" && c.State != "initialized" {
			var logs bytes.Buffer
			_ = eng.Logs(context.WithoutCancel(ctx), id, engine.LogOptions{Tail: 20}, &logs)
			h.remove()
			return nil, fmt.Errorf("the copy's helper container exited with code %d: %s (is %s a static outpost binary on a filesystem mounted without noexec?)",
				c.ExitCode, strings.TrimSpace(logs.String()), bin)
		}
		if i > 200 || ctx.Err() != nil {
			h.remove()
			return nil, errors.New("the copy's helper container did not start within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *helper) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = h.eng.RemoveContainer(ctx, h.id)
}

// tail keeps the last limit bytes written.
type tail struct {
	limit int
	buf   []byte
}

var _ io.Writer = (*tail)(nil)

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tail) String() string { return string(t.buf) }

// RunningUsers names the services of app that mount one of the volume keys
// and whose container (as the inventory records it) is running: a copy
// taken while they run would miss their later writes.
func RunningUsers(ctx context.Context, eng engine.Engine, st *store.Store, app *model.Appliance, keys ...string) ([]string, error) {
	want := map[string]bool{}
	for _, k := range keys {
		for _, svc := range users(app, k) {
			want[svc] = true
		}
	}
	recs, err := st.Containers(ctx, app.Name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, c := range recs {
		if !want[c.Service] || c.Job {
			continue
		}
		info, err := eng.InspectContainer(ctx, c.ID)
		if errors.Is(err, engine.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inspecting container %s: %w", c.Name, err)
		}
		if info.Running {
			out = append(out, c.Service)
		}
	}
	return out, nil
}
