package checks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
)

// fakeScanner installs an executable named name on a fresh PATH that
// prints report (and its version for --version), recording its arguments
// and environment.
func fakeScanner(t *testing.T, name, report string) (argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	reportFile := filepath.Join(dir, "report.json")
	if err := os.WriteFile(reportFile, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo '" + name + " 9.9.9'; exit 0; fi\n" +
		"echo \"$@\" >> " + argsFile + "\nenv | grep -E '^(TRIVY|GRYPE)_' | sort >> " + argsFile + "\ncat " + reportFile + "\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	return argsFile
}

const trivyReport = `{"Results":[{"Target":"x","Vulnerabilities":[
 {"VulnerabilityID":"CVE-2024-1","PkgName":"openssl","InstalledVersion":"3.0.1","FixedVersion":"3.0.2","Severity":"CRITICAL"},
 {"VulnerabilityID":"CVE-2024-2","PkgName":"zlib","InstalledVersion":"1.2","Severity":"HIGH"},
 {"VulnerabilityID":"CVE-2024-3","PkgName":"curl","InstalledVersion":"8","Severity":"MEDIUM"},
 {"VulnerabilityID":"CVE-2024-4","PkgName":"bash","InstalledVersion":"5","Severity":"LOW"}]},
 {"Target":"y","Vulnerabilities":null}]}`

const grypeReport = `{"matches":[
 {"vulnerability":{"id":"GHSA-1","severity":"High","fix":{"versions":["2.0"]}},"artifact":{"name":"lodash","version":"1.0"}},
 {"vulnerability":{"id":"CVE-9","severity":"Negligible","fix":{"versions":[]}},"artifact":{"name":"tar","version":"1"}}]}`

func vulnApp() (*model.Appliance, *fakeImages) {
	app := &model.Appliance{Name: "shop", Services: map[string]*model.Service{
		"api": {Name: "api", Image: "test/api:1"},
		"web": {Name: "web", Image: "test/api:1"},
	}}
	return app, &fakeImages{archives: map[string][]byte{"test/api:1": []byte("not really an archive")}}
}

func TestVulnTrivy(t *testing.T) {
	args := fakeScanner(t, "trivy", trivyReport)
	app, eng := vulnApp()
	rep, err := Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 {
		t.Fatalf("one image used by two services gives one result, got %+v", rep.Results)
	}
	r := rep.Results[0]
	if r.Status != Fail || !strings.Contains(r.Detail, "1 CRITICAL, 1 HIGH, 1 MEDIUM, 1 LOW (trivy 9.9.9)") {
		t.Errorf("result: %s %q", r.Status, r.Detail)
	}
	if len(r.Notes) != 2 || !strings.HasPrefix(r.Notes[0], "CRITICAL CVE-2024-1 openssl 3.0.1 (fixed in 3.0.2)") || !strings.Contains(r.Notes[1], "no fix yet") {
		t.Errorf("notes: %q", r.Notes)
	}
	got, _ := os.ReadFile(args)
	for _, want := range []string{"image --input ", "--format json", "TRIVY_OFFLINE_SCAN=true", "TRIVY_SKIP_DB_UPDATE=true"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("trivy was not run with %q:\n%s", want, got)
		}
	}

	// Only CRITICAL fails: HIGH alone passes.
	rep, err = Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng, FailOn: []string{"critical"}, TempDir: t.TempDir()})
	if err != nil || rep.Results[0].Status != Fail || len(rep.Results[0].Notes) != 1 {
		t.Errorf("--fail-on critical: %v %+v", err, rep)
	}
}

func TestVulnGrype(t *testing.T) {
	args := fakeScanner(t, "grype", grypeReport)
	app, eng := vulnApp()
	rep, err := Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	if r.Status != Fail || !strings.Contains(r.Detail, "0 CRITICAL, 1 HIGH, 1 NEGLIGIBLE") {
		t.Errorf("result: %s %q", r.Status, r.Detail)
	}
	got, _ := os.ReadFile(args)
	if !strings.Contains(string(got), "docker-archive:") || !strings.Contains(string(got), "GRYPE_DB_AUTO_UPDATE=false") {
		t.Errorf("grype arguments:\n%s", got)
	}
	rep, err = Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng, FailOn: []string{"CRITICAL"}, TempDir: t.TempDir()})
	if err != nil || rep.Failed() {
		t.Errorf("no CRITICAL must pass: %v %+v", err, rep.Results)
	}
}

func TestVulnNoScanner(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	app, eng := vulnApp()
	_, err := Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng})
	if !errors.Is(err, ErrNoScanner) {
		t.Fatalf("err = %v, want ErrNoScanner", err)
	}
	for _, want := range []string{"trivy", "grype", "offline", "--download-db-only"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the message does not say %q: %v", want, err)
		}
	}
	if _, _, err := FindScanner("clair"); err == nil || errors.Is(err, ErrNoScanner) {
		t.Errorf("an unknown scanner name must be a usage error: %v", err)
	}
}

func TestVulnScannerFails(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo trivy 1; exit 0; fi\necho 'FATAL --skip-db-update cannot be specified on the first run' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "trivy"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	app, eng := vulnApp()
	rep, err := Vuln(context.Background(), VulnOptions{Appliance: app, Engine: eng, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Results[0]
	if r.Status != Fail || !strings.Contains(r.Detail, "~/.cache/trivy") || !strings.Contains(strings.Join(r.Notes, "\n"), "first run") {
		t.Errorf("a failing scanner: %s %q %q", r.Status, r.Detail, r.Notes)
	}
}
