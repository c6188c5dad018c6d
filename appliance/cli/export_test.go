package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/export"
	"github.com/outpostdev/outpost/appliance/model"
)

func unitFiles(t *testing.T, version string) []export.QuadletFile {
	t.Helper()
	app := &model.Appliance{Name: "tale", Version: version,
		Volumes:  map[string]*model.Volume{"data": {Key: "data", Name: "tale_data"}},
		Networks: map[string]*model.Network{"default": {Key: "default", Name: "tale_default"}},
		Services: map[string]*model.Service{"db": {Name: "db", Image: "db:" + version, Restart: model.RestartAlways,
			Mounts: []model.Mount{{Type: model.MountVolume, Source: "data", Target: "/data"}}}}}
	files, _, err := export.Quadlet(app, export.QuadletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// A new export replaces what an earlier one wrote, but not a unit the
// operator changed since (unless --force), and then writes nothing.
func TestWriteUnitsReplacesExportsButNotEdits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "units")
	files := unitFiles(t, "1")
	if err := writeUnits(dir, files, false); err != nil {
		t.Fatal(err)
	}
	// The same content again is no conflict.
	if err := writeUnits(dir, files, false); err != nil {
		t.Fatalf("rewriting identical units: %v", err)
	}
	// A new version's export replaces the earlier export's units.
	v2 := unitFiles(t, "2")
	if err := writeUnits(dir, v2, false); err != nil {
		t.Fatalf("replacing an earlier export: %v", err)
	}
	// An operator's edit is refused, and nothing else is written.
	edited := filepath.Join(dir, "tale-db.container")
	b, _ := os.ReadFile(edited)
	if err := os.WriteFile(edited, append(b, []byte("Environment=EXTRA=1\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	changed := unitFiles(t, "3")
	err := writeUnits(dir, changed, false)
	if err == nil || !strings.Contains(err.Error(), "tale-db.container was changed since it was exported") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("edited unit: %v", err)
	}
	for _, f := range v2 {
		if f.Name == "tale-db.container" {
			continue
		}
		if got, _ := os.ReadFile(filepath.Join(dir, f.Name)); string(got) != f.Content {
			t.Errorf("%s was written before the refusal", f.Name)
		}
	}
	// Nor is a file of the same name that no export wrote.
	if err := os.WriteFile(edited, []byte("[Container]\nImage=mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeUnits(dir, changed, false); err == nil {
		t.Fatal("a unit no export wrote was replaced")
	}
	if err := writeUnits(dir, changed, true); err != nil {
		t.Fatal(err)
	}
	for _, f := range changed {
		got, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil || string(got) != f.Content {
			t.Errorf("%s after --force: %q %v", f.Name, got, err)
		}
		if st, _ := os.Stat(filepath.Join(dir, f.Name)); st.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v", f.Name, st.Mode().Perm())
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
