// Package checks implements `outpost check`: the container tests a vendor
// would otherwise write as shell scripts, for any appliance.
//
//   - Images inspects every image the definition uses, from Podman storage,
//     by reading its config and layer tarballs (never by running it): OCI
//     labels, non-root user, secrets baked into the environment or files,
//     a healthcheck, and sizes against budgets.
//   - Smoke brings the appliance up under a separate, test-labelled project
//     and checks health, HTTP endpoints, inter-service connections and ready
//     markers, then tears down only what it created.
//   - Vuln runs an installed scanner (trivy or grype) offline over the
//     images and summarises HIGH and CRITICAL findings.
//
// Each verb returns a Report that WriteTable, WriteJSON and WriteJUnit
// render. The package never pulls images or contacts a network itself, and
// never touches a volume that is not labelled as its own test volume.
package checks

import (
	"errors"
	"time"
)

// Status is the outcome of one check.
type Status string

// Statuses, from best to worst; Skip means the check could not run
// because something before it failed.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Report kinds.
const (
	KindImages = "images"
	KindSmoke  = "smoke"
	KindVuln   = "vuln"
)

// Result is one check of one subject (an image, a service, a declared
// smoke check).
type Result struct {
	// Subject is what was checked: an image reference, a service, or the
	// name of a declared smoke check.
	Subject string `json:"subject"`
	// Services lists the services using an image (image checks).
	Services []string `json:"services,omitempty"`
	// Check names the check, e.g. "labels", "non-root", "healthy".
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Detail is one line saying what was found and, on WARN or FAIL, what
	// to do.
	Detail string `json:"detail"`
	// Notes are further lines: findings, probe output, log lines.
	Notes []string `json:"notes,omitempty"`
	// Measured holds the numbers behind a check, for machines: the size
	// check's "uncompressed_bytes" and "compressed_bytes".
	Measured map[string]int64 `json:"measured,omitempty"`
	// Duration is how long the check took, when it is measured.
	Duration time.Duration `json:"duration,omitempty"`
}

// Report is the outcome of one `outpost check` verb.
type Report struct {
	// Kind is KindImages, KindSmoke or KindVuln.
	Kind string `json:"kind"`
	// Appliance is the appliance name (for smoke, the production name; the
	// test project is in Project).
	Appliance string `json:"appliance"`
	// Project is the test project smoke ran under.
	Project  string        `json:"project,omitempty"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	Results  []Result      `json:"results"`
	// Summary holds totals (PASS, WARN, FAIL, SKIP counts).
	Summary map[Status]int `json:"summary"`
}

// add appends a result.
func (r *Report) add(res Result) { r.Results = append(r.Results, res) }

// finish computes the summary and duration.
func (r *Report) finish() {
	r.Summary = map[Status]int{Pass: 0, Warn: 0, Fail: 0, Skip: 0}
	for _, res := range r.Results {
		r.Summary[res.Status]++
	}
	r.Duration = time.Since(r.Started)
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// ErrFailed is returned (wrapped) by the verbs' callers to signal a report
// with failures; the CLI exits 1.
var ErrFailed = errors.New("checks failed")

// ErrNoScanner is returned by Vuln when neither trivy nor grype is
// installed; the CLI exits with ExitNoScanner.
var ErrNoScanner = errors.New("no vulnerability scanner is installed")

// Exit statuses of `outpost check`.
const (
	// ExitFailed: at least one check failed.
	ExitFailed = 1
	// ExitNoScanner: `check vuln` found no scanner to run.
	ExitNoScanner = 3
)

// worst returns the worse of two statuses (FAIL > WARN > SKIP > PASS).
func worst(a, b Status) Status {
	rank := map[Status]int{Pass: 0, Skip: 1, Warn: 2, Fail: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
