//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"
)

// jobsCompose is OpenAleph-shaped: a one-shot `upgrade` job runs after the
// database is healthy and before the API starts.
const jobsCompose = `
name: jobs
services:
  db:
    image: localhost/outpost-demo:latest
    command: ["store"]
    environment:
      INIT_DELAY: 1s
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:7000/health", "--file", "/tmp/store-ready"]
      interval: 1s
  api:
    image: localhost/outpost-demo:latest
    command: ["api"]
    environment:
      STORE_URL: http://db:7000
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 1s
x-outpost:
  jobs:
    upgrade:
      service: api
      command: ["job", "migrating", "schema"]
      after: [db]
      before: [api]
      timeout: 1m
  services:
    api:
      # The job's environment comes from the api service.
      role: rotatable
`

func TestJobsRunBetweenPhases(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "jobs")
	f := h.write("compose.yml", jobsCompose)
	h.must(5*time.Minute, "up", "-f", f)
	evs := h.events()
	dbHealthy := firstEvent(t, evs, "db", "healthy")
	jobDone := firstEvent(t, evs, "upgrade", "job-exited")
	apiStarted := firstEvent(t, evs, "api", "started")
	if !jobDone.After(dbHealthy) || !apiStarted.After(jobDone) {
		t.Fatalf("order: db healthy %s, job done %s, api started %s", dbHealthy, jobDone, apiStarted)
	}
	logs := h.must(time.Minute, "logs", "upgrade")
	if !strings.Contains(logs.stdout, "migrating schema") {
		t.Fatalf("job output not captured: %q", logs.stdout)
	}
}

func TestFailingJobFailsUp(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "jobs")
	compose := strings.Replace(jobsCompose, `command: ["job", "migrating", "schema"]`, `command: ["fail"]`, 1)
	f := h.write("compose.yml", compose)
	r := h.run(5*time.Minute, "up", "-f", f)
	if r.code == 0 {
		t.Fatal("up succeeded although the job failed")
	}
	if !strings.Contains(r.stderr, `service "upgrade" job exited with code 1`) {
		t.Fatalf("error does not name the failed job:\n%s", r.stderr)
	}
	for _, name := range containersOf(t, "jobs") {
		if name == "jobs-api" {
			t.Fatalf("api was created although the job before it failed")
		}
	}
}
