package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/secrets"
)

// installApp is testApp with an install job between db and api.
func installApp() *model.Appliance {
	app := testApp()
	app.Jobs = []*model.Job{{Name: "init", Service: "api", Command: []string{"init"}, After: []string{"db"}, Before: []string{"api"}, When: model.JobInstall}}
	return app
}

func jobCreates(f *fakeEngine) int {
	n := 0
	for _, c := range f.creates {
		if c == JobContainerName("t", "init") {
			n++
		}
	}
	return n
}

func TestInstallJobRunsOnceAcrossStarts(t *testing.T) {
	f := newFake()
	r := newRuntime(t, f)
	ctx := context.Background()
	if jobs, err := r.Jobs(ctx, installApp(), ""); err != nil || strings.Join(jobs, ",") != "init" {
		t.Fatalf("jobs of the first start = %v, %v; want [init]", jobs, err)
	}
	if _, err := r.Up(ctx, installApp(), UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := jobCreates(f); n != 1 {
		t.Fatalf("install job ran %d times on the first start, want 1", n)
	}
	if _, done, err := r.InstallJobDone(ctx, "t", "init"); err != nil || !done {
		t.Fatalf("install job not recorded: %v %v", done, err)
	}
	// A restarted daemon (a new runtime on the same store), with the
	// containers gone (a reboot that lost them) or kept.
	r2 := New(f, r.st, nil)
	for i := range 2 {
		if i == 1 {
			f.containers = map[string]*fakeContainer{}
		}
		if jobs, err := r2.Jobs(ctx, installApp(), ""); err != nil || len(jobs) != 0 {
			t.Fatalf("jobs after install = %v, %v; want none", jobs, err)
		}
		if _, err := r2.Up(ctx, installApp(), UpOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := jobCreates(f); n != 1 {
		t.Fatalf("install job ran %d times in all, want 1", n)
	}
}

func TestInstallJobNotRerunAfterLaterFailure(t *testing.T) {
	f := newFake()
	f.never["web"] = true
	r := newRuntime(t, f)
	ctx := context.Background()
	if _, err := r.Up(ctx, installApp(), UpOptions{}); err == nil {
		t.Fatal("up succeeded although web never became healthy")
	}
	f.never["web"] = false
	f.containers = map[string]*fakeContainer{}
	if _, err := r.Up(ctx, installApp(), UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := jobCreates(f); n != 1 {
		t.Fatalf("install job ran %d times, want 1 (it completed on the failed first start)", n)
	}
}

func TestFailingInstallJobFailsStart(t *testing.T) {
	f := newFake()
	f.jobExit["init"] = 3
	r := newRuntime(t, f)
	ctx := context.Background()
	_, err := r.Up(ctx, installApp(), UpOptions{})
	var se *ServiceError
	if !errors.As(err, &se) || se.Service != "init" {
		t.Fatalf("error = %v, want a ServiceError naming the job", err)
	}
	for _, want := range []string{`"init" job exited with code 3`, "last log lines", "log of"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%s", want, err)
		}
	}
	for _, c := range f.creates {
		if c == "t-api" {
			t.Fatal("api was created although the install job before it failed")
		}
	}
	if _, done, _ := r.InstallJobDone(ctx, "t", "init"); done {
		t.Fatal("a failed install job was recorded as done")
	}
	// The next attempt runs it again.
	f.jobExit["init"] = 0
	if _, err := r.Up(ctx, installApp(), UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := jobCreates(f); n != 2 {
		t.Fatalf("install job ran %d times, want 2 (failed, then succeeded)", n)
	}
}

func TestSecretValuesStayOutOfTheStore(t *testing.T) {
	f := newFake()
	r := newRuntime(t, f)
	dir := t.TempDir()
	r.SetSecretsDir(func(string) string { return dir })
	ctx := context.Background()
	app := testApp()
	app.Secrets = []*model.Secret{{Name: "db-password", Generate: "hex", Length: 16}}
	app.Services["api"].Secrets = []string{"db-password"}
	if _, err := r.Up(ctx, app, UpOptions{}); err != nil {
		t.Fatal(err)
	}
	value, err := os.ReadFile(filepath.Join(dir, "db-password"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.containers["t-api"].spec.Env["DB_PASSWORD"]; got != string(value) {
		t.Fatalf("api's environment DB_PASSWORD = %q, want the secret's value", got)
	}
	rev, err := r.st.ActiveRevision(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(rev.Spec), string(value)) || !strings.Contains(string(rev.Spec), secrets.Marker("db-password")) {
		t.Fatalf("stored spec holds the value or lacks the marker:\n%s", rev.Spec)
	}
	// Read back, the definition has the value again.
	dep, _, err := r.Deployed(ctx, "t")
	if err != nil || dep.Services["api"].Environment["DB_PASSWORD"] != string(value) {
		t.Fatalf("deployed definition lacks the value: %v", err)
	}
	// A rotated value recreates the container using it, and only it.
	before := len(f.creates)
	if err := os.WriteFile(filepath.Join(dir, "db-password"), []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	dep.Services["api"].Environment["DB_PASSWORD"] = secrets.Marker("db-password")
	if _, err := r.Up(ctx, dep, UpOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := f.creates[before:]; len(got) != 1 || got[0] != "t-api" {
		t.Fatalf("recreated %v, want [t-api]", got)
	}
	if got := f.containers["t-api"].spec.Env["DB_PASSWORD"]; got != "rotated" {
		t.Fatalf("api's environment DB_PASSWORD = %q after rotation", got)
	}
}
