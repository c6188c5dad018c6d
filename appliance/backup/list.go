package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/store"
)

// Snapshot is one snapshot found on disk.
type Snapshot struct {
	Name      string `json:"name"`
	Path      string `json:"path"`
	Appliance string `json:"appliance"`
	Revision  int64  `json:"revision"`
	Version   string `json:"version,omitempty"`
	Trigger   string `json:"trigger,omitempty"`
	// CreatedAt is when the snapshot started.
	CreatedAt time.Time `json:"created_at"`
	// Size is the total size of its files in bytes.
	Size int64 `json:"size"`
	// Complete is true when it has a valid manifest; incomplete ones are
	// listed only on request.
	Complete bool `json:"complete"`
	// VerifiedAt is when its checksums were last verified (from the
	// store); zero if never.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	// Problem says why an incomplete snapshot is not usable.
	Problem string `json:"problem,omitempty"`

	manifest *Manifest
}

// ListOptions configure List.
type ListOptions struct {
	// Appliance limits the list to one appliance; empty lists all.
	Appliance string
	// StateDir is the state directory; its backups/ is searched.
	StateDir string
	// Dirs are more directories to search. Directories of snapshots the
	// store recorded (made with --to) are always searched.
	Dirs []string
	// Incomplete also lists interrupted or unreadable snapshots.
	Incomplete bool
}

// List returns the snapshots in the searched directories, newest first.
// Only directories with a valid manifest are complete; others are left out
// unless Incomplete is set.
func (m *Manager) List(ctx context.Context, opts ListOptions) ([]Snapshot, error) {
	recs, err := m.st.Backups(ctx, opts.Appliance)
	if err != nil {
		return nil, err
	}
	dirs := map[string]bool{}
	if opts.StateDir != "" {
		dirs[filepath.Join(opts.StateDir, DirName)] = true
	}
	for _, d := range opts.Dirs {
		if abs, err := filepath.Abs(d); err == nil {
			dirs[abs] = true
		}
	}
	verified := map[string]time.Time{}
	for _, r := range recs {
		if r.Status == store.BackupComplete || r.Status == store.BackupRunning {
			dirs[filepath.Dir(r.Path)] = true
		}
		if r.Status == store.BackupComplete && r.VerifiedAt.After(verified[r.Path]) {
			verified[r.Path] = r.VerifiedAt
		}
	}
	var out []Snapshot
	for _, dir := range sortedKeys(dirs) {
		snaps, err := scanDir(dir, opts.Appliance, opts.Incomplete)
		if err != nil {
			return nil, err
		}
		for i := range snaps {
			snaps[i].VerifiedAt = verified[snaps[i].Path]
		}
		out = append(out, snaps...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].Path > out[j].Path
	})
	return out, nil
}

// scanDir lists the snapshots of appliance (all when empty) in dir.
func scanDir(dir, appliance string, incomplete bool) ([]Snapshot, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading backup directory %s: %w", dir, err)
	}
	var out []Snapshot
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			// Being written, or being deleted.
			name := strings.TrimSuffix(strings.TrimPrefix(e.Name(), "."), ".partial")
			if incomplete && strings.HasSuffix(e.Name(), ".partial") && (appliance == "" || strings.HasPrefix(name, appliance+"-")) {
				out = append(out, Snapshot{Name: name, Path: p, Problem: "interrupted or still being written", CreatedAt: modTime(p)})
			}
			continue
		}
		man, err := ReadManifest(p)
		if err != nil {
			if incomplete && (appliance == "" || strings.HasPrefix(e.Name(), appliance+"-")) {
				out = append(out, Snapshot{Name: e.Name(), Path: p, Problem: err.Error(), CreatedAt: modTime(p)})
			}
			continue
		}
		if appliance != "" && man.Appliance != appliance {
			continue
		}
		out = append(out, snapshotOf(p, man))
	}
	return out, nil
}

func snapshotOf(path string, man *Manifest) Snapshot {
	return Snapshot{Name: man.Name, Path: path, Appliance: man.Appliance, Revision: man.Revision, Version: man.Version,
		Trigger: man.Trigger, CreatedAt: man.CreatedAt, Size: man.Size(), Complete: true, manifest: man}
}

func modTime(p string) time.Time {
	fi, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().UTC()
}

// VerifyResult reports a verification.
type VerifyResult struct {
	Path     string          `json:"path"`
	Files    int             `json:"files"`
	Size     int64           `json:"size"`
	OK       bool            `json:"ok"`
	Problems []VerifyProblem `json:"problems,omitempty"`
}

// Verify checks every file of the snapshot at path against its manifest
// (presence, size, sha256) and records the time of a successful check. It
// returns an error wrapping ErrIncomplete when there is no valid manifest
// and ErrCorrupt, with every mismatch in the result, when files differ.
func (m *Manager) Verify(ctx context.Context, path string, progress ProgressFunc) (*VerifyResult, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	man, err := ReadManifest(abs)
	if err != nil {
		return nil, err
	}
	res, err := verify(abs, man, progress)
	if err != nil {
		return res, err
	}
	if err := m.st.SetBackupVerified(ctx, abs, time.Now()); err != nil && !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("recording the verification failed", "err", err)
	}
	return res, nil
}

func verify(dir string, man *Manifest, progress ProgressFunc) (*VerifyResult, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	res := &VerifyResult{Path: dir, Files: len(man.Files), Size: man.Size()}
	problems, err := verifyFiles(dir, man, func(done, total int64) {
		progress(Event{Step: "verify", Item: man.Name, Bytes: done, Total: total})
	})
	if err != nil {
		return nil, fmt.Errorf("verifying %s: %w", dir, err)
	}
	res.Problems = problems
	res.OK = len(problems) == 0
	if !res.OK {
		var lines []string
		for _, p := range problems {
			lines = append(lines, p.Path+": "+p.Problem)
		}
		return res, fmt.Errorf("snapshot %s does not match its manifest (%s): %w", dir, strings.Join(lines, "; "), ErrCorrupt)
	}
	progress(Event{Step: "verify", Item: man.Name, Bytes: res.Size, Total: res.Size, Done: true})
	return res, nil
}

// Retention says which complete snapshots to keep. A snapshot is kept when
// either rule keeps it; the newest is always kept.
type Retention struct {
	// KeepLast keeps the N newest.
	KeepLast int `json:"keep_last,omitempty"`
	// KeepWithin keeps those younger than this.
	KeepWithin time.Duration `json:"keep_within,omitempty"`
}

// Empty reports whether no rule is set (nothing would be pruned).
func (r Retention) Empty() bool { return r.KeepLast <= 0 && r.KeepWithin <= 0 }

// Select splits complete snapshots of one appliance, in any order, into
// those to keep and those to remove at time now, both newest first.
// Incomplete snapshots are never selected for removal.
func (r Retention) Select(snaps []Snapshot, now time.Time) (keep, remove []Snapshot) {
	sorted := make([]Snapshot, 0, len(snaps))
	for _, s := range snaps {
		if s.Complete {
			sorted = append(sorted, s)
		}
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].CreatedAt.After(sorted[j].CreatedAt) })
	for i, s := range sorted {
		switch {
		case i == 0,
			r.KeepLast > 0 && i < r.KeepLast,
			r.KeepWithin > 0 && now.Sub(s.CreatedAt) <= r.KeepWithin,
			r.Empty():
			keep = append(keep, s)
		default:
			remove = append(remove, s)
		}
	}
	return keep, remove
}

// PruneOptions configure Prune.
type PruneOptions struct {
	// Appliance whose snapshots are pruned. Required.
	Appliance string
	// StateDir and Dirs say where to look, as for List.
	StateDir string
	Dirs     []string
	// Retention is the rule; at least one of its fields must be set.
	Retention Retention
	// DryRun reports what would be removed without removing it.
	DryRun bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// PruneResult reports a prune.
type PruneResult struct {
	Kept    []Snapshot `json:"kept"`
	Removed []Snapshot `json:"removed"`
	// Partials are interrupted snapshots removed (only when no backup of
	// the appliance was running).
	Partials []string `json:"partials,omitempty"`
	DryRun   bool     `json:"dry_run,omitempty"`
}

// Prune removes the appliance's complete snapshots that the retention rule
// does not keep. Only directories with a valid Outpost manifest for that
// appliance are candidates; everything else in the directories is left
// alone, except interrupted snapshots of the appliance (".<name>.partial"),
// which are removed when no backup of it is running. A snapshot is deleted
// by first renaming it to a hidden name, so a crash midway never leaves
// something that looks complete.
func (m *Manager) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.Appliance == "" {
		return nil, errors.New("prune: no appliance named")
	}
	if opts.Retention.Empty() {
		return nil, errors.New("prune: give --keep-last N and/or --keep-within AGE (e.g. 14d); without a rule nothing is removed")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	snaps, err := m.List(ctx, ListOptions{Appliance: opts.Appliance, StateDir: opts.StateDir, Dirs: opts.Dirs, Incomplete: true})
	if err != nil {
		return nil, err
	}
	var complete []Snapshot
	var partials []Snapshot
	for _, s := range snaps {
		if s.Complete {
			complete = append(complete, s)
		} else if strings.HasSuffix(filepath.Base(s.Path), ".partial") {
			partials = append(partials, s)
		}
	}
	keep, remove := opts.Retention.Select(complete, opts.Now())
	res := &PruneResult{Kept: keep, Removed: remove, DryRun: opts.DryRun}
	if opts.DryRun {
		return res, nil
	}
	for _, s := range remove {
		if err := removeSnapshot(s.Path); err != nil {
			return res, err
		}
		if err := m.st.SetBackupPruned(ctx, s.Path); err != nil {
			m.log.Warn("recording a pruned snapshot failed", "path", s.Path, "err", err)
		}
	}
	if len(remove) > 0 {
		m.event(ctx, opts.Appliance, "", "backup-pruned", fmt.Sprintf("%d snapshots removed, %d kept", len(remove), len(keep)))
	}
	if len(partials) > 0 {
		// A partial snapshot belongs to a running backup unless the
		// backup lock is free.
		if release, err := m.st.AcquireLock(ctx, lockName(opts.Appliance), "outpost backups prune"); err == nil {
			for _, p := range partials {
				if err := os.RemoveAll(p.Path); err != nil {
					m.log.Warn("removing an interrupted snapshot failed", "path", p.Path, "err", err)
					continue
				}
				res.Partials = append(res.Partials, p.Path)
			}
			release()
		}
	}
	return res, nil
}

// removeSnapshot deletes a snapshot directory: renamed to a hidden name
// first, its manifest removed, then the rest.
func removeSnapshot(path string) error {
	hidden := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".deleting")
	if err := os.Rename(path, hidden); err != nil {
		return fmt.Errorf("removing snapshot %s: %w", path, err)
	}
	if err := os.Remove(filepath.Join(hidden, ManifestFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing snapshot %s: %w", path, err)
	}
	if err := os.RemoveAll(hidden); err != nil {
		return fmt.Errorf("removing snapshot %s: %w", path, err)
	}
	return nil
}

// Resolve finds a snapshot by path, or by name in the searched
// directories, and returns its absolute path.
func (m *Manager) Resolve(ctx context.Context, ref string, opts ListOptions) (string, error) {
	if strings.ContainsRune(ref, os.PathSeparator) || ref == "." || ref == ".." {
		abs, err := filepath.Abs(ref)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("snapshot %s: %w", ref, err)
		}
		return abs, nil
	}
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		if _, err := os.Stat(filepath.Join(ref, ManifestFile)); err == nil {
			return filepath.Abs(ref)
		}
	}
	opts.Incomplete = true
	snaps, err := m.List(ctx, opts)
	if err != nil {
		return "", err
	}
	for _, s := range snaps {
		if s.Name == ref || filepath.Base(s.Path) == ref {
			return s.Path, nil
		}
	}
	return "", fmt.Errorf("no snapshot named %q; `outpost backups` lists them (or give its path)", ref)
}
