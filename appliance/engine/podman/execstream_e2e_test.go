//go:build podmane2e

package podman

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
)

// TestPodmanE2EExecStream checks streaming exec against a real rootless
// Podman: input reaches the process and its end is seen (a `cat` exits),
// large output arrives intact without being held in memory, stdout and
// stderr stay apart, exit codes come back, and pause either works or fails
// cleanly (rootless cgroups v1 cannot pause). Run like TestPodmanE2E.
func TestPodmanE2EExecStream(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("run as an unprivileged user with subuid/subgid ranges")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	runtimeDir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	svc, err := StartService(ctx, ServiceOptions{RuntimeDir: runtimeDir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop(context.Background())
	eng, err := Connect(ctx, svc.URI(), WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	prefix := "outpost-e2e-xs-" + randHex(4)
	x := &e2e{t: t, ctx: ctx, eng: eng, prefix: prefix, labels: map[string]string{engine.LabelTest: prefix}}
	defer x.cleanup()
	ref := "localhost/" + prefix + ":1"
	archive, err := busyboxArchive(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.LoadImage(ctx, bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	x.image = ref
	id, err := eng.CreateContainer(ctx, engine.ContainerSpec{Name: x.name("c"), Image: ref, Command: []string{"sleep", "600"}, Labels: x.labels})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, id)

	t.Run("StdinRoundTrip", func(t *testing.T) {
		in := make([]byte, 8<<20)
		_, _ = rand.Read(in)
		h := sha256.New()
		var errb bytes.Buffer
		code, err := eng.ExecStream(ctx, id, []string{"cat"}, engine.ExecIO{Stdin: bytes.NewReader(in), Stdout: h, Stderr: &errb})
		if err != nil || code != 0 {
			t.Fatalf("cat: code %d, err %v, stderr %s", code, err, errb.String())
		}
		want := sha256.Sum256(in)
		if !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatal("cat returned different bytes than it was given")
		}
	})
	t.Run("LargeOutput", func(t *testing.T) {
		const size = 200 << 20
		var n countWriter
		start := time.Now()
		code, err := eng.ExecStream(ctx, id, []string{"head", "-c", "209715200", "/dev/zero"}, engine.ExecIO{Stdout: &n})
		if err != nil || code != 0 || n != size {
			t.Fatalf("head: code %d, err %v, %d bytes, want %d", code, err, n, size)
		}
		t.Logf("200 MiB streamed in %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("StderrAndExitCode", func(t *testing.T) {
		var out, errb bytes.Buffer
		code, err := eng.ExecStream(ctx, id, []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, engine.ExecIO{Stdout: &out, Stderr: &errb})
		if err != nil || code != 3 || strings.TrimSpace(out.String()) != "out" || strings.TrimSpace(errb.String()) != "err" {
			t.Fatalf("code %d err %v stdout %q stderr %q", code, err, out.String(), errb.String())
		}
	})
	t.Run("ProcessIgnoresInput", func(t *testing.T) {
		code, err := eng.ExecStream(ctx, id, []string{"true"}, engine.ExecIO{Stdin: io.LimitReader(zeroReader{}, 64<<20)})
		if err != nil || code != 0 {
			t.Fatalf("code %d err %v", code, err)
		}
	})
	t.Run("Pause", func(t *testing.T) {
		if err := eng.PauseContainer(ctx, id); err != nil {
			t.Logf("pause refused (expected on rootless cgroups v1): %v", err)
			return
		}
		c, _ := eng.InspectContainer(ctx, id)
		if c.State != "paused" {
			t.Errorf("state after pause = %s", c.State)
		}
		if err := eng.UnpauseContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	})
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
