package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
// Absolute paths under testdata/ are replaced by $TESTDATA so golden files
// do not depend on where the repository is checked out.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	got = bytes.ReplaceAll(got, []byte(abs), []byte("$TESTDATA"))
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run go test ./appliance/compose -update and review the diff):\n%s", path, lineDiff(string(want), string(got)))
	}
}

// lineDiff shows the first lines that differ, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("line " + strconv.Itoa(i+1) + "\n  want: " + wl + "\n  got:  " + gl + "\n")
			shown++
		}
	}
	return b.String()
}

func marshal(t *testing.T, a *model.Appliance, warnings []Warning) (app, warn []byte) {
	t.Helper()
	app, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var wb bytes.Buffer
	for _, w := range warnings {
		wb.WriteString(w.String())
		wb.WriteByte('\n')
	}
	return append(app, '\n'), wb.Bytes()
}

func TestGoldenTale(t *testing.T) {
	a, warnings, err := Load(context.Background(), Options{
		Files:    []string{"testdata/tale/compose.yml", "testdata/tale/compose.test.yml"},
		Profiles: []string{"test"},
		Environ:  map[string]string{"RUST_LOG": "info"},
	})
	if err != nil {
		t.Fatal(err)
	}
	app, warn := marshal(t, a, warnings)
	golden(t, "tale.golden.json", app)
	golden(t, "tale.warnings.golden", warn)
}

func TestGoldenOpenAleph(t *testing.T) {
	a, warnings, err := Load(context.Background(), Options{
		Files:   []string{"testdata/openaleph/compose.yml"},
		Environ: map[string]string{"ALEPH_TAG": "sha-1a2b3c4"},
	})
	if err != nil {
		t.Fatal(err)
	}
	app, warn := marshal(t, a, warnings)
	golden(t, "openaleph.golden.json", app)
	golden(t, "openaleph.warnings.golden", warn)
}
