package podman

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakePodman writes a script standing in for podman: it answers --version
// and runs body for anything else.
func fakePodman(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "podman")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'podman version 4.3.1'; exit 0; fi\n" + body + "\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStartServiceReportsChildOutput(t *testing.T) {
	podman := fakePodman(t, "echo 'Error: boom: cannot start' >&2; exit 125")
	_, err := StartService(context.Background(), ServiceOptions{RuntimeDir: t.TempDir(), PodmanPath: podman})
	if err == nil || !strings.Contains(err.Error(), "boom: cannot start") || !strings.Contains(err.Error(), "exited before its socket answered") {
		t.Fatalf("err = %v, want the child's stderr", err)
	}
}

func TestStartServiceTimesOut(t *testing.T) {
	podman := fakePodman(t, "echo 'still starting'; exec sleep 30")
	start := time.Now()
	_, err := StartService(context.Background(), ServiceOptions{RuntimeDir: t.TempDir(), PodmanPath: podman, StartTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "did not answer within") || !strings.Contains(err.Error(), "still starting") {
		t.Fatalf("err = %v, want a timeout with the child's output", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s: the child was not stopped", took)
	}
}

func TestStartServiceWritesConfAndEnv(t *testing.T) {
	dir := t.TempDir()
	envOut := filepath.Join(dir, "env")
	podman := fakePodman(t, "env > "+envOut+"; exit 1")
	_, _ = StartService(context.Background(), ServiceOptions{RuntimeDir: dir, PodmanPath: podman})
	env, err := os.ReadFile(envOut)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	// The fake says 4.3.1, which predates CONTAINERS_CONF_OVERRIDE.
	if !strings.Contains(string(env), "CONTAINERS_CONF="+conf+"\n") || !strings.Contains(string(env), "DISABLE_HC_SYSTEMD=true") {
		t.Errorf("child env lacks the config settings:\n%s", env)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "default_ulimits") || !strings.Contains(string(b), "default_capabilities") {
		t.Errorf("containers.conf for Podman 4.3 is not standalone:\n%s", b)
	}
}

func TestStartServiceNeedsPodman(t *testing.T) {
	_, err := StartService(context.Background(), ServiceOptions{RuntimeDir: t.TempDir(), PodmanPath: "/nonexistent/podman"})
	if err == nil || !strings.Contains(err.Error(), "finding podman") {
		t.Fatalf("err = %v", err)
	}
}

func TestResolveURIUsesContainerHost(t *testing.T) {
	t.Setenv("CONTAINER_HOST", "unix:///run/user/1000/podman/podman.sock")
	uri, stop, err := ResolveURI(context.Background(), ServiceOptions{})
	if err != nil || uri != "unix:///run/user/1000/podman/podman.sock" {
		t.Fatalf("ResolveURI = %q, %v", uri, err)
	}
	stop()
}

func TestRecoveryHintNamesMigrate(t *testing.T) {
	out := `level=error msg="invalid internal status, try resetting the pause process with \"podman system migrate\": could not find any running process"`
	if h := recoveryHint(out); !strings.Contains(h, "podman system migrate") {
		t.Fatalf("hint for a lost pause process = %q, want it to name podman system migrate", h)
	}
	if h := recoveryHint("Error: some other failure"); h != "" {
		t.Fatalf("hint for an unknown failure = %q, want none", h)
	}
}
