package backup

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

func TestManifestRoundTripAndChecks(t *testing.T) {
	dir := t.TempDir()
	var files []FileEntry
	for rel, content := range map[string]string{DefinitionFile: "{}", RevisionFile: "{}", "hooks/db.out": "dump", "volumes/v.tar": "tar"} {
		w, err := createFile(dir, rel, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
		fe, err := w.finish()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fe)
	}
	m := &Manifest{Format: Format, Name: "a-1", Appliance: "a", CreatedAt: time.Now().UTC(), Files: files,
		Hooks:   []HookEntry{{Service: "db", File: "hooks/db.out", Command: []string{"dump"}}},
		Volumes: []VolumeEntry{{Key: "v", Name: "a_v", File: "volumes/v.tar", Copy: CopyStopped}}}
	if err := writeManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size() != 2+2+4+3 || len(got.Files) != 4 || !slices.IsSortedFunc(got.Files, func(a, b FileEntry) int { return strings.Compare(a.Path, b.Path) }) {
		t.Errorf("manifest = %+v", got)
	}
	if problems, err := verifyFiles(dir, got, nil); err != nil || len(problems) != 0 {
		t.Errorf("verify = %v, %v", problems, err)
	}
	// Every way a file can differ is reported, all at once.
	os.WriteFile(filepath.Join(dir, "hooks", "db.out"), []byte("DUMP"), 0o600)
	os.Remove(filepath.Join(dir, "volumes", "v.tar"))
	os.WriteFile(filepath.Join(dir, RevisionFile), []byte("{} "), 0o600)
	problems, err := verifyFiles(dir, got, nil)
	if err != nil || len(problems) != 3 {
		t.Fatalf("verify = %+v, %v", problems, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "."+ManifestFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary manifest left behind")
	}
}

func TestManifestRejects(t *testing.T) {
	sum := strings.Repeat("a", 64)
	base := func() Manifest {
		return Manifest{Format: Format, Name: "a-1", Appliance: "a", Files: []FileEntry{
			{Path: DefinitionFile, SHA256: sum}, {Path: RevisionFile, SHA256: sum}}}
	}
	for _, tc := range []struct {
		name string
		edit func(*Manifest)
		want string
	}{
		{"newer format", func(m *Manifest) { m.Format = "outpost-snapshot/2" }, "format"},
		{"traversal", func(m *Manifest) { m.Files = append(m.Files, FileEntry{Path: "../x", SHA256: sum}) }, "not a path inside"},
		{"absolute", func(m *Manifest) { m.Files = append(m.Files, FileEntry{Path: "/etc/passwd", SHA256: sum}) }, "not a path inside"},
		{"unclean", func(m *Manifest) { m.Files = append(m.Files, FileEntry{Path: "a/./b", SHA256: sum}) }, "not a path inside"},
		{"duplicate", func(m *Manifest) { m.Files = append(m.Files, FileEntry{Path: DefinitionFile, SHA256: sum}) }, "twice"},
		{"no checksum", func(m *Manifest) { m.Files[0].SHA256 = "" }, "checksum"},
		{"no definition", func(m *Manifest) { m.Files = m.Files[1:] }, "definition.json is not listed"},
		{"unlisted volume", func(m *Manifest) { m.Volumes = []VolumeEntry{{Name: "v", File: "volumes/v.tar"}} }, "not listed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.edit(&m)
			if err := m.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("check = %v, want %q", err, tc.want)
			}
		})
	}
	m := base()
	if err := m.check(); err != nil {
		t.Errorf("valid manifest: %v", err)
	}
}

func TestReadManifestIncomplete(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifest(dir); !errors.Is(err, ErrIncomplete) {
		t.Errorf("no manifest: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"format":`), 0o600)
	if _, err := ReadManifest(dir); !errors.Is(err, ErrIncomplete) {
		t.Errorf("truncated manifest: %v", err)
	}
}

func TestGroupByHold(t *testing.T) {
	plans := []volumePlan{
		{key: "a", hold: []string{"x"}},
		{key: "b"},
		{key: "c", hold: []string{"y"}},
		{key: "d", hold: []string{"x", "y"}},
	}
	groups := groupByHold(plans)
	if len(groups) != 2 {
		t.Fatalf("groups = %+v", groups)
	}
	var keys []string
	for _, p := range groups[0].volumes {
		keys = append(keys, p.key)
	}
	if !slices.Equal(keys, []string{"a", "d", "c"}) || !slices.Equal(groups[0].hold, []string{"x", "y"}) {
		t.Errorf("first group = %v holding %v", keys, groups[0].hold)
	}
	if len(groups[1].volumes) != 1 || groups[1].volumes[0].key != "b" || len(groups[1].hold) != 0 {
		t.Errorf("second group = %+v", groups[1])
	}
}

func TestNextDue(t *testing.T) {
	started := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &model.BackupPolicy{Schedule: 24 * time.Hour}
	for _, tc := range []struct {
		name           string
		policy         *model.BackupPolicy
		done, failedAt time.Time
		want           time.Time
	}{
		{"no schedule", &model.BackupPolicy{KeepLast: 3}, time.Time{}, time.Time{}, time.Time{}},
		{"first after start", p, time.Time{}, time.Time{}, started.Add(FirstDelay)},
		{"interval after last", p, started.Add(-time.Hour), time.Time{}, started.Add(23 * time.Hour)},
		{"retry after failure", p, started.Add(-48 * time.Hour), started.Add(time.Hour), started.Add(time.Hour + RetryDelay)},
		{"old failure ignored", p, started.Add(time.Hour), started, started.Add(25 * time.Hour)},
	} {
		if got := NextDue(tc.policy, tc.done, tc.failedAt, started); !got.Equal(tc.want) {
			t.Errorf("%s: NextDue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestChangesData(t *testing.T) {
	from := testApp()
	if r := ChangesData(from, testApp()); r != nil {
		t.Errorf("same definition: %v", r)
	}
	to := testApp()
	to.Services["db"].Image = "pg:16"
	to.Services["reader"].Image = "files:2" // read-only: not a data change
	to.Jobs = []*model.Job{{Name: "migrate", Service: "db", When: model.JobUpgrade}, {Name: "seed", Service: "db", When: model.JobInstall}}
	to.VolumeMigrations = []model.VolumeMigration{{From: "filedata", To: "pgdata"}}
	got := ChangesData(from, to)
	want := []string{
		"stateful service db changes (image pg:15 → pg:16) and writes to a volume",
		"job migrate runs during the upgrade",
		"volume filedata is migrated into pgdata",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ChangesData = %q\nwant %q", got, want)
	}
	rot := testApp()
	rot.Services["files"].Role = model.RoleRotatable
	rot2 := testApp()
	rot2.Services["files"].Role = model.RoleRotatable
	rot2.Services["files"].Image = "files:2"
	if r := ChangesData(rot, rot2); r != nil {
		t.Errorf("rotatable image change: %v", r)
	}
}
