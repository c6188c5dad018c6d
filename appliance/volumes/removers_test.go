package volumes

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Volumes hold the data: `down`, upgrades, rollbacks, recovery and a plain
// uninstall must never delete one. This test keeps the list of places that
// call RemoveVolume (outside tests) to the three that may: the guarded
// legacy prune, `uninstall --purge` after its typed confirmation, and the
// smoke test's own test-labelled volumes. A new caller fails here until it
// is reviewed and added.
func TestOnlyReviewedCodeRemovesVolumes(t *testing.T) {
	allowed := []string{
		"appliance/checks/smoke.go",                // the smoke test's copy: volumes labelled io.outpost.test only
		"appliance/cli/install.go",                 // uninstall --purge, typed confirmation
		"appliance/volumes/prune.go",               // prune --legacy, guards and confirmation
		"appliance/engine/podman/volume_remove.go", // the implementation
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("run from the package directory (go test does): %v", err)
	}
	call := regexp.MustCompile(`\.RemoveVolume\(|volumes\.Remove\(`)
	var found []string
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if call.Match(data) {
			rel, _ := filepath.Rel(root, path)
			found = append(found, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		if !slices.Contains(allowed, f) {
			t.Errorf("%s removes volumes: only reviewed code may (down, upgrade, rollback and uninstall without --purge never do); add it to this test's list once reviewed", f)
		}
	}
	if !slices.Contains(found, "appliance/volumes/prune.go") {
		t.Errorf("the scan found no call in prune.go (found %v): the pattern is stale", found)
	}
}
