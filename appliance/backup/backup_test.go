package backup

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

func TestBackupWritesCompleteSnapshot(t *testing.T) {
	e := newEnv(t)
	suspended, resumed := 0, 0
	var events []Event
	res, err := e.backup(t, Options{
		Progress: func(ev Event) { events = append(events, ev) },
		Suspend: func() func() {
			suspended++
			return func() { resumed++ }
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.Size == 0 || res.Revision != 1 {
		t.Errorf("result = %+v", res)
	}
	if filepath.Dir(res.Path) != filepath.Join(e.stateDir, DirName) || !strings.HasPrefix(res.Name, "shop-") {
		t.Errorf("snapshot at %s", res.Path)
	}
	man, err := ReadManifest(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range man.Files {
		paths = append(paths, f.Path)
	}
	want := []string{DefinitionFile, "hooks/db.out", RevisionFile, "state/proxy/ca-root.crt", "state/proxy/caddy/ca.key",
		"state/secrets/shop/db-password", "volumes/shop_filedata.tar", "volumes/shop_pgdata.tar"}
	if !slices.Equal(paths, want) {
		t.Errorf("manifest files = %v, want %v", paths, want)
	}
	if b, _ := os.ReadFile(filepath.Join(res.Path, "hooks", "db.out")); string(b) != e.eng.hookOut {
		t.Errorf("hook output = %q", b)
	}
	// The file service writes its volume without a hook: pausing is
	// refused (as on rootless cgroups v1), so it is stopped for the copy and
	// started again; the database has a hook and keeps running; the
	// read-only reader is never held.
	if res.Volumes["shop_filedata"] != CopyStopped || res.Volumes["shop_pgdata"] != CopyHook {
		t.Errorf("volumes = %v", res.Volumes)
	}
	if got := e.eng.called("stop "); !slices.Equal(got, []string{"stop shop-files"}) {
		t.Errorf("stops = %v", got)
	}
	if got := e.eng.called("start shop-files"); len(got) != 1 {
		t.Errorf("files not started again: %v", e.eng.calls)
	}
	if suspended != 1 || resumed != 1 {
		t.Errorf("supervision suspended %d, resumed %d times; want once each", suspended, resumed)
	}
	if e.eng.called("create shop-backup-") == nil || len(e.eng.called("remove shop-backup-")) != len(e.eng.called("create shop-backup-")) {
		t.Errorf("helpers not all removed: %v", e.eng.calls)
	}
	// The volume copy holds the files, rooted at "./".
	names := tarNames(t, filepath.Join(res.Path, "volumes", "shop_filedata.tar"))
	if !slices.Equal(names, []string{"./", "./a.txt", "./sub/", "./sub/b.bin"}) {
		t.Errorf("volume tar entries = %v", names)
	}
	snaps, err := e.m.List(context.Background(), ListOptions{StateDir: e.stateDir})
	if err != nil || len(snaps) != 1 || !snaps[0].Complete || snaps[0].VerifiedAt.IsZero() || snaps[0].Size != res.Size {
		t.Fatalf("List = %+v, %v", snaps, err)
	}
	rec, err := e.st.LastBackup(context.Background(), "shop", store.BackupComplete)
	if err != nil || rec.Path != res.Path || rec.Size != res.Size {
		t.Errorf("store record = %+v, %v", rec, err)
	}
	if !slices.ContainsFunc(events, func(ev Event) bool { return ev.Step == "volume" && ev.Done && ev.Item == "shop_filedata" }) {
		t.Errorf("no progress for the volume copy: %+v", events)
	}
}

func TestBackupPausesWhereItCan(t *testing.T) {
	e := newEnv(t)
	e.eng.canPause = true
	res, err := e.backup(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Volumes["shop_filedata"] != CopyPaused || res.Held["files"] != CopyPaused {
		t.Errorf("volumes %v held %v", res.Volumes, res.Held)
	}
	if len(e.eng.called("stop ")) != 0 || len(e.eng.called("unpause shop-files")) != 1 {
		t.Errorf("calls = %v", e.eng.calls)
	}
}

func TestBackupQuiesceNoneCopiesLive(t *testing.T) {
	e := newEnv(t)
	res, err := e.backup(t, Options{Quiesce: model.QuiesceNone})
	if err != nil {
		t.Fatal(err)
	}
	if res.Volumes["shop_filedata"] != CopyLive || len(e.eng.called("stop ")) != 0 {
		t.Errorf("volumes %v, calls %v", res.Volumes, e.eng.calls)
	}
}

func TestBackupFailureKeepsNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*fakeEngine)
		want  string
	}{
		{"hook fails", func(f *fakeEngine) { f.hookCode = 2 }, "exited with code 2"},
		{"volume copy fails", func(f *fakeEngine) { f.failTar = true }, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.setup(e.eng)
			_, err := e.backup(t, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "no snapshot was kept") {
				t.Fatalf("err = %v", err)
			}
			entries, _ := os.ReadDir(filepath.Join(e.stateDir, DirName))
			if len(entries) != 0 {
				t.Errorf("left in the backup directory: %v", entries)
			}
			snaps, _ := e.m.List(context.Background(), ListOptions{StateDir: e.stateDir, Incomplete: true})
			if len(snaps) != 0 {
				t.Errorf("listed: %+v", snaps)
			}
			recs, _ := e.st.Backups(context.Background(), "shop")
			if len(recs) != 1 || recs[0].Status != store.BackupFailed || recs[0].Error == "" {
				t.Errorf("records = %+v", recs)
			}
			// Whatever was stopped runs again.
			c, _ := e.eng.InspectContainer(context.Background(), "shop-files")
			if !c.Running {
				t.Error("files left stopped")
			}
		})
	}
}

func TestInterruptedSnapshotIsNotListed(t *testing.T) {
	e := newEnv(t)
	good, err := e.backup(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.stateDir, DirName)
	// A backup killed midway: its partial directory, and a copy of a
	// snapshot whose manifest never got written.
	partial := filepath.Join(dir, ".shop-20250101T000000Z.partial")
	os.MkdirAll(filepath.Join(partial, "hooks"), 0o700)
	os.WriteFile(filepath.Join(partial, "hooks", "db.out"), []byte("half a dump"), 0o600)
	noManifest := filepath.Join(dir, "shop-20250102T000000Z")
	os.MkdirAll(noManifest, 0o700)
	os.WriteFile(filepath.Join(noManifest, DefinitionFile), []byte("{}"), 0o600)
	badManifest := filepath.Join(dir, "shop-20250103T000000Z")
	os.MkdirAll(badManifest, 0o700)
	os.WriteFile(filepath.Join(badManifest, ManifestFile), []byte(`{"format":"outpost-snapshot/1","files":[{"path":"../../etc/passwd"}]}`), 0o600)

	snaps, err := e.m.List(context.Background(), ListOptions{StateDir: e.stateDir})
	if err != nil || len(snaps) != 1 || snaps[0].Path != good.Path {
		t.Fatalf("List = %+v, %v; want only %s", snaps, err, good.Path)
	}
	all, _ := e.m.List(context.Background(), ListOptions{StateDir: e.stateDir, Incomplete: true})
	if len(all) != 4 {
		t.Fatalf("List(Incomplete) = %d entries, want 4: %+v", len(all), all)
	}
	for _, s := range all {
		if s.Path != good.Path && (s.Complete || s.Problem == "") {
			t.Errorf("%s listed as %+v", s.Path, s)
		}
	}
	// Prune never removes what is not a complete snapshot, except
	// interrupted ones when no backup runs.
	res, err := e.m.Prune(context.Background(), PruneOptions{Appliance: "shop", StateDir: e.stateDir, Retention: Retention{KeepLast: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 0 || !slices.Equal(res.Partials, []string{partial}) {
		t.Errorf("prune = %+v", res)
	}
	for _, p := range []string{noManifest, badManifest, good.Path} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("prune removed %s", p)
		}
	}
	// Restoring an incomplete snapshot is refused.
	_, err = e.m.Restore(context.Background(), RestoreOptions{Snapshot: noManifest, StateDir: e.stateDir})
	if !errors.Is(err, ErrIncomplete) {
		t.Errorf("restore of a snapshot without manifest: %v", err)
	}
}

func TestRestoreRefusesCorruptSnapshotBeforeTouchingAnything(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"flipped byte", func(t *testing.T, dir string) { flipByte(t, filepath.Join(dir, "volumes", "shop_filedata.tar"), 700) }, "checksum differs"},
		{"truncated", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, "hooks", "db.out"), 3) }, "truncated"},
		{"missing", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "volumes", "shop_pgdata.tar")) }, "missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			res, err := e.backup(t, Options{})
			if err != nil {
				t.Fatal(err)
			}
			tc.damage(t, res.Path)
			e.eng.calls = nil
			// An engine that panics on any call proves nothing is touched.
			m := New(panicEngine{}, e.st, nil, nil)
			_, err = m.Restore(context.Background(), RestoreOptions{Snapshot: res.Path, StateDir: e.stateDir, StopRunning: true,
				BeforeChange: func() { t.Error("BeforeChange called for a corrupt snapshot") }})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was changed") {
				t.Fatalf("err = %v", err)
			}
			vr, err := e.m.Verify(context.Background(), res.Path, nil)
			if !errors.Is(err, ErrCorrupt) || vr == nil || len(vr.Problems) != 1 {
				t.Errorf("Verify = %+v, %v", vr, err)
			}
		})
	}
}

func TestRestoreRefusesWhileRunning(t *testing.T) {
	e := newEnv(t)
	res, err := e.backup(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.eng.calls = nil
	_, err = e.m.Restore(context.Background(), RestoreOptions{Snapshot: res.Path, StateDir: e.stateDir})
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "--stop") {
		t.Fatalf("err = %v", err)
	}
	for _, c := range e.eng.calls {
		if !strings.HasPrefix(c, "remove shop-backup") {
			t.Errorf("restore changed something: %s", c)
		}
	}
}

func TestRestoreRefusesMissingImages(t *testing.T) {
	e := newEnv(t)
	res, err := e.backup(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	def := filepath.Join(res.Path, DefinitionFile)
	b, _ := os.ReadFile(def)
	// Rewrite the definition and its manifest entry as a different
	// snapshot would have them.
	b = []byte(strings.Replace(string(b), "files:1", "missing:1", -1))
	os.WriteFile(def, b, 0o600)
	man, _ := ReadManifest(res.Path)
	for i, f := range man.Files {
		if f.Path == DefinitionFile {
			sum, n, _ := hashFile(def, nil)
			man.Files[i].SHA256, man.Files[i].Size = sum, n
		}
	}
	if err := writeManifest(res.Path, man); err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Restore(context.Background(), RestoreOptions{Snapshot: res.Path, StateDir: e.stateDir, StopRunning: true})
	if err == nil || !strings.Contains(err.Error(), "missing:1") || !strings.Contains(err.Error(), "never pulls") {
		t.Fatalf("err = %v", err)
	}
}

func TestRestoreRebuildsVolumesAndRunsHooks(t *testing.T) {
	e := newEnv(t)
	res, err := e.backup(t, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Lose everything: the volumes' contents and the secrets.
	os.RemoveAll(e.eng.volumes["shop_filedata"])
	os.MkdirAll(e.eng.volumes["shop_filedata"], 0o755)
	os.WriteFile(filepath.Join(e.eng.volumes["shop_pgdata"], "stale"), []byte("newer data"), 0o600)
	os.RemoveAll(filepath.Join(e.stateDir, "secrets"))
	os.RemoveAll(filepath.Join(e.stateDir, "proxy"))
	for _, c := range []string{"shop-db", "shop-files", "shop-reader"} {
		e.eng.StopContainer(context.Background(), c, 0)
	}
	rr, err := e.m.Restore(context.Background(), RestoreOptions{Snapshot: res.Path, StateDir: e.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Volumes["shop_filedata"] != "copy" || rr.Volumes["shop_pgdata"] != "hook" || !slices.Equal(rr.Hooks, []string{"db"}) {
		t.Errorf("restore = %+v", rr)
	}
	if b, _ := os.ReadFile(filepath.Join(e.eng.volumes["shop_filedata"], "sub", "b.bin")); len(b) != 100000 {
		t.Errorf("file volume not restored: %d bytes", len(b))
	}
	// The hook-restored volume is emptied for the service to initialise,
	// then loaded from the dump.
	if entries, _ := os.ReadDir(e.eng.volumes["shop_pgdata"]); len(entries) != 0 {
		t.Errorf("database volume not emptied: %v", entries)
	}
	if e.eng.restored.String() != e.eng.hookOut {
		t.Errorf("restore hook read %q", e.eng.restored.String())
	}
	if b, _ := os.ReadFile(filepath.Join(e.stateDir, "secrets", "shop", "db-password")); string(b) != "s3cret" {
		t.Errorf("secret = %q", b)
	}
	// State files and directories come back with their modes: the CA root
	// stays readable, the CA key private.
	for rel, want := range map[string]os.FileMode{"proxy": os.ModeDir | 0o755, "proxy/ca-root.crt": 0o644, "proxy/caddy": os.ModeDir | 0o700,
		"proxy/caddy/ca.key": 0o600, "secrets/shop/db-password": 0o600} {
		if fi, err := os.Stat(filepath.Join(e.stateDir, rel)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want mode %v", rel, fi.Mode(), err, want)
		}
	}
	if rr.Revision != 1 || len(rr.Services) != 3 {
		t.Errorf("up result: revision %d, %d services", rr.Revision, len(rr.Services))
	}
}

func TestRetentionSelect(t *testing.T) {
	now := time.Date(2025, 6, 30, 12, 0, 0, 0, time.UTC)
	var snaps []Snapshot
	for _, days := range []int{0, 1, 2, 5, 10, 20, 40} {
		snaps = append(snaps, Snapshot{Name: "d" + strconv.Itoa(days), Complete: true, CreatedAt: now.Add(-time.Duration(days) * 24 * time.Hour)})
	}
	snaps = append(snaps, Snapshot{Name: "partial", CreatedAt: now.Add(-100 * 24 * time.Hour)})
	names := func(ss []Snapshot) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	for _, tc := range []struct {
		r          Retention
		keep, gone []string
	}{
		{Retention{KeepLast: 3}, []string{"d0", "d1", "d2"}, []string{"d5", "d10", "d20", "d40"}},
		{Retention{KeepWithin: 14 * 24 * time.Hour}, []string{"d0", "d1", "d2", "d5", "d10"}, []string{"d20", "d40"}},
		{Retention{KeepLast: 2, KeepWithin: 6 * 24 * time.Hour}, []string{"d0", "d1", "d2", "d5"}, []string{"d10", "d20", "d40"}},
		// The newest is always kept, however strict the rule.
		{Retention{KeepWithin: time.Hour}, []string{"d0"}, []string{"d1", "d2", "d5", "d10", "d20", "d40"}},
		{Retention{}, []string{"d0", "d1", "d2", "d5", "d10", "d20", "d40"}, nil},
	} {
		keep, gone := tc.r.Select(snaps, now)
		if !slices.Equal(names(keep), tc.keep) || !slices.Equal(names(gone), tc.gone) {
			t.Errorf("%+v: keep %v remove %v; want %v, %v", tc.r, names(keep), names(gone), tc.keep, tc.gone)
		}
	}
}

func TestPruneRemovesOnlyWhatRetentionDrops(t *testing.T) {
	e := newEnv(t)
	clock := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var paths []string
	for i := 0; i < 4; i++ {
		res, err := e.backup(t, Options{SkipVerify: true, Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, res.Path)
		clock = clock.Add(24 * time.Hour)
	}
	stranger := filepath.Join(e.stateDir, DirName, "not-a-snapshot")
	os.MkdirAll(stranger, 0o700)
	if _, err := e.m.Prune(context.Background(), PruneOptions{Appliance: "shop", StateDir: e.stateDir}); err == nil {
		t.Error("prune without a rule did not fail")
	}
	res, err := e.m.Prune(context.Background(), PruneOptions{Appliance: "shop", StateDir: e.stateDir, Retention: Retention{KeepLast: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Kept) != 2 || len(res.Removed) != 2 || res.Removed[0].Path != paths[1] || res.Removed[1].Path != paths[0] {
		t.Fatalf("prune = %+v", res)
	}
	for i, p := range paths {
		_, err := os.Stat(p)
		if gone := i < 2; gone != errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: stat err %v", p, err)
		}
	}
	if _, err := os.Stat(stranger); err != nil {
		t.Error("prune removed a directory that is not a snapshot")
	}
	recs, _ := e.st.Backups(context.Background(), "shop")
	pruned := 0
	for _, r := range recs {
		if r.Status == store.BackupPruned {
			pruned++
		}
	}
	if pruned != 2 {
		t.Errorf("%d records marked pruned, want 2", pruned)
	}
}

func TestResolveByName(t *testing.T) {
	e := newEnv(t)
	res, err := e.backup(t, Options{SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.m.Resolve(context.Background(), res.Name, ListOptions{StateDir: e.stateDir})
	if err != nil || p != res.Path {
		t.Errorf("Resolve(%s) = %s, %v", res.Name, p, err)
	}
	if _, err := e.m.Resolve(context.Background(), "nope", ListOptions{StateDir: e.stateDir}); err == nil {
		t.Error("Resolve of an unknown name did not fail")
	}
}

// panicEngine fails the test (by panicking) on any engine call.
type panicEngine struct{ engine.Engine }

func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func tarNames(t *testing.T, p string) []string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var out []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}
