package checks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// Scanners Vuln knows, in the order it looks for them.
var Scanners = []string{"trivy", "grype"}

// InstallHint says how to get a scanner onto an air-gapped box.
const InstallHint = `install one of them and its vulnerability database:
  trivy: the .deb or .rpm from https://github.com/aquasecurity/trivy/releases,
         then on a connected machine ` + "`trivy image --download-db-only`" + ` and copy
         ~/.cache/trivy to this user's ~/.cache/trivy
  grype: the .deb or .rpm from https://github.com/anchore/grype/releases,
         then on a connected machine ` + "`grype db update`" + ` and copy
         ~/.cache/grype to this user's ~/.cache/grype
Outpost runs the scanner offline: it never downloads anything itself.`

// Severities, most severe first.
var severities = []string{"CRITICAL", "HIGH", "MEDIUM", "LOW", "NEGLIGIBLE", "UNKNOWN"}

// CheckVulns is the name of the vulnerability check.
const CheckVulns = "vulnerabilities"

// VulnOptions configure Vuln.
type VulnOptions struct {
	// Appliance is the definition whose images are scanned. Required.
	Appliance *model.Appliance
	// Engine exports images from Podman storage; may be nil when Archives
	// provides every image.
	Engine ImageEngine
	// Archives are docker-archive files to scan instead of exporting.
	Archives []string
	// Services restricts the scan to these services' images.
	Services []string
	// Scanner is "trivy" or "grype"; empty takes the first installed.
	Scanner string
	// FailOn are the severities that fail the check. Default CRITICAL and
	// HIGH.
	FailOn []string
	// TempDir holds the exported archive while it is scanned.
	TempDir string
	// Timeout bounds each image's scan. Default 15 minutes.
	Timeout time.Duration
	// Progress receives one line per image; nil discards.
	Progress func(subject, message string)
	// Log receives debug logs; nil discards.
	Log *slog.Logger
}

// Vuln scans every image with an installed scanner, offline, and reports
// per image the count of findings by severity; an image with a finding of
// a FailOn severity fails. Without a scanner it returns an error wrapping
// ErrNoScanner whose message says how to install one.
func Vuln(ctx context.Context, opts VulnOptions) (*Report, error) {
	app := opts.Appliance
	if app == nil {
		return nil, errors.New("scanning images: no appliance definition given")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = func(string, string) {}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Minute
	}
	failOn := map[string]bool{}
	if len(opts.FailOn) == 0 {
		opts.FailOn = []string{"CRITICAL", "HIGH"}
	}
	for _, s := range opts.FailOn {
		s = strings.ToUpper(strings.TrimSpace(s))
		if !contains(severities, s) {
			return nil, fmt.Errorf("--fail-on %q: want one of %s", s, strings.Join(severities, ", "))
		}
		failOn[s] = true
	}
	scanner, bin, err := FindScanner(opts.Scanner)
	if err != nil {
		return nil, err
	}
	version := scannerVersion(ctx, bin)
	uses, err := imageUses(app, opts.Services)
	if err != nil {
		return nil, err
	}
	archives, err := indexArchives(opts.Archives)
	if err != nil {
		return nil, err
	}
	rep := &Report{Kind: KindVuln, Appliance: app.Name, Started: time.Now()}
	for _, u := range uses {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		opts.Progress(u.ref, "scanning with "+scanner)
		rep.add(scanImage(ctx, u, archives[normalizeRef(u.ref)], scanner, bin, version, failOn, opts))
	}
	rep.finish()
	return rep, nil
}

// findScanner returns the scanner to run and its path.
func FindScanner(want string) (string, string, error) {
	if want != "" {
		if !contains(Scanners, want) {
			return "", "", fmt.Errorf("--scanner %q: want one of %s", want, strings.Join(Scanners, ", "))
		}
		p, err := exec.LookPath(want)
		if err != nil {
			return "", "", fmt.Errorf("%w: %s is not on PATH; %s", ErrNoScanner, want, InstallHint)
		}
		return want, p, nil
	}
	for _, s := range Scanners {
		if p, err := exec.LookPath(s); err == nil {
			return s, p, nil
		}
	}
	return "", "", fmt.Errorf("%w (looked for %s on PATH); %s", ErrNoScanner, strings.Join(Scanners, ", "), InstallHint)
}

// scannerVersion returns the first line of `<scanner> --version`.
func scannerVersion(ctx context.Context, bin string) string {
	vctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(vctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// vulnerability is one finding, whichever scanner reported it.
type vulnerability struct {
	ID, Package, Installed, Fixed, Severity string
}

// scanImage exports (or takes) one image's archive and scans it.
func scanImage(ctx context.Context, u imageUse, archive, scanner, bin, version string, failOn map[string]bool, opts VulnOptions) Result {
	start := time.Now()
	svcNames := make([]string, len(u.services))
	for i, s := range u.services {
		svcNames[i] = s.Name
	}
	res := Result{Subject: u.ref, Services: svcNames, Check: CheckVulns}
	done := func(st Status, detail string, notes ...string) Result {
		res.Status, res.Detail, res.Notes, res.Duration = st, detail, notes, time.Since(start)
		return res
	}
	if archive == "" {
		if opts.Engine == nil {
			return done(Fail, fmt.Sprintf("%s is not in any --archive and no container engine is connected", u.ref))
		}
		f, err := os.CreateTemp(opts.TempDir, "outpost-vuln-*.tar")
		if err != nil {
			return done(Fail, fmt.Sprintf("creating a temporary archive: %v (set --tmp-dir)", err))
		}
		defer os.Remove(f.Name())
		err = opts.Engine.SaveImage(ctx, u.ref, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return done(Fail, fmt.Sprintf("exporting %s from Podman: %v; is it loaded? (Outpost never pulls)", u.ref, err))
		}
		archive = f.Name()
	}
	sctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var args, env []string
	cacheDir := ""
	switch scanner {
	case "trivy":
		args = []string{"image", "--input", archive, "--format", "json", "--quiet"}
		env = []string{"TRIVY_OFFLINE_SCAN=true", "TRIVY_SKIP_DB_UPDATE=true", "TRIVY_SKIP_UPDATE=true",
			"TRIVY_SKIP_JAVA_DB_UPDATE=true", "TRIVY_SKIP_VERSION_CHECK=true", "TRIVY_NO_PROGRESS=true", "TRIVY_SCANNERS=vuln"}
		cacheDir = "~/.cache/trivy"
	case "grype":
		args = []string{"docker-archive:" + archive, "-o", "json", "-q"}
		env = []string{"GRYPE_DB_AUTO_UPDATE=false", "GRYPE_CHECK_FOR_APP_UPDATE=false", "GRYPE_DB_VALIDATE_AGE=false"}
		cacheDir = "~/.cache/grype"
	}
	cmd := exec.CommandContext(sctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	opts.Log.Debug("running scanner", "scanner", bin, "args", args)
	if err := cmd.Run(); err != nil {
		tail := tailText(stderr.String(), 15)
		return done(Fail, fmt.Sprintf("%s failed on %s: %v; if it needs its database, download it on a connected machine and copy it to %s", scanner, u.ref, err, cacheDir), tail)
	}
	vulns, err := parseScan(scanner, stdout.Bytes())
	if err != nil {
		return done(Fail, fmt.Sprintf("reading %s's report on %s: %v", scanner, u.ref, err), tailText(stderr.String(), 15))
	}
	st, detail, notes := summarise(vulns, scanner, version, failOn)
	return done(st, detail, notes...)
}

// parseScan reads a trivy or grype JSON report.
func parseScan(scanner string, data []byte) ([]vulnerability, error) {
	var out []vulnerability
	switch scanner {
	case "trivy":
		var r struct {
			Results []struct {
				Vulnerabilities []struct {
					VulnerabilityID, PkgName, InstalledVersion, FixedVersion, Severity string
				}
			}
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		for _, res := range r.Results {
			for _, v := range res.Vulnerabilities {
				out = append(out, vulnerability{v.VulnerabilityID, v.PkgName, v.InstalledVersion, v.FixedVersion, strings.ToUpper(v.Severity)})
			}
		}
	case "grype":
		var r struct {
			Matches []struct {
				Vulnerability struct {
					ID       string
					Severity string
					Fix      struct{ Versions []string }
				}
				Artifact struct{ Name, Version string }
			}
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, err
		}
		for _, m := range r.Matches {
			out = append(out, vulnerability{m.Vulnerability.ID, m.Artifact.Name, m.Artifact.Version,
				strings.Join(m.Vulnerability.Fix.Versions, ", "), strings.ToUpper(m.Vulnerability.Severity)})
		}
	default:
		return nil, fmt.Errorf("unknown scanner %q", scanner)
	}
	return out, nil
}

// summarise counts findings by severity and lists the failing ones.
func summarise(vulns []vulnerability, scanner, version string, failOn map[string]bool) (Status, string, []string) {
	counts := map[string]int{}
	for _, v := range vulns {
		if !contains(severities, v.Severity) {
			v.Severity = "UNKNOWN"
		}
		counts[v.Severity]++
	}
	sort.SliceStable(vulns, func(i, j int) bool {
		ri, rj := indexOf(severities, vulns[i].Severity), indexOf(severities, vulns[j].Severity)
		if ri != rj {
			return ri < rj
		}
		return vulns[i].ID < vulns[j].ID
	})
	var parts []string
	failing := 0
	for _, s := range severities {
		if counts[s] > 0 || s == "CRITICAL" || s == "HIGH" {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
		if failOn[s] {
			failing += counts[s]
		}
	}
	by := scanner
	if version != "" {
		by = version
	}
	detail := strings.Join(parts, ", ") + " (" + by + ")"
	var notes []string
	seen := map[string]bool{}
	for _, v := range vulns {
		if !failOn[v.Severity] || seen[v.ID+v.Package] {
			continue
		}
		seen[v.ID+v.Package] = true
		if len(notes) == maxNotes {
			notes = append(notes, fmt.Sprintf("... and more (%d in total)", failing))
			break
		}
		fix := "no fix yet"
		if v.Fixed != "" {
			fix = "fixed in " + v.Fixed
		}
		notes = append(notes, fmt.Sprintf("%s %s %s %s (%s)", v.Severity, v.ID, v.Package, v.Installed, fix))
	}
	if failing > 0 {
		return Fail, detail + ": update the affected packages (or the base image) and rebuild", notes
	}
	return Pass, detail, notes
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return len(list)
}

// tailText returns the last n lines of s.
func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
