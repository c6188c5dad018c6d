package checks

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// sampleReport has every status, notes, escaping and two subjects.
func sampleReport() *Report {
	r := &Report{Kind: KindImages, Appliance: "shop", Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	r.add(Result{Subject: "ghcr.io/shop/api:1.2", Services: []string{"api"}, Check: CheckLabels, Status: Pass, Detail: "version=1.2 source=https://x", Duration: 1500 * time.Millisecond})
	r.add(Result{Subject: "ghcr.io/shop/api:1.2", Services: []string{"api"}, Check: CheckSecrets, Status: Fail, Detail: "2 secret(s) <baked> & \"quoted\"",
		Notes: []string{"FAIL env DB_PASSWORD: secret-looking name", "FAIL /app/.env: .env file (layer 0)"}, Duration: 250 * time.Millisecond})
	r.add(Result{Subject: "ghcr.io/shop/api:1.2", Services: []string{"api"}, Check: CheckNonRoot, Status: Warn, Detail: "starts as root", Notes: []string{"api: gosu"}})
	r.add(Result{Subject: "ghcr.io/shop/web:1.2", Services: []string{"web"}, Check: CheckSize, Status: Skip, Detail: "not read"})
	r.finish()
	r.Duration = 3 * time.Second
	return r
}

func TestWriteJUnitGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.junit.xml", buf.Bytes())
	// It is well-formed XML with the right totals.
	var parsed junitSuites
	if err := xml.Unmarshal(buf.Bytes(), &parsed); err != nil {
		t.Fatalf("not valid XML: %v", err)
	}
	if parsed.Tests != 4 || parsed.Failures != 1 || parsed.Skipped != 1 || len(parsed.Suites) != 2 {
		t.Errorf("totals: %+v", parsed)
	}
}

func TestWriteTableGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.table.txt", buf.Bytes())
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteJSON(&buf, sampleReport()); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 4 || back.Summary[Fail] != 1 || back.Summary[Warn] != 1 || !back.Failed() {
		t.Errorf("round trip: %+v", back)
	}
	if !strings.Contains(buf.String(), `"status": "FAIL"`) {
		t.Errorf("statuses are not strings:\n%s", buf.String())
	}
}
