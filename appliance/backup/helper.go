package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// Volumes are read and written by a helper container: the image of a
// service that mounts the volume (so it is present wherever the appliance
// runs, and the volume is mounted where that service sees it), running this
// outpost binary, bind-mounted read-only, as root of the rootless user
// namespace. Owners and modes inside the volume are thus exactly what the
// appliance's containers see, which the rootless user cannot read from the
// host. Data flows through exec streams, never through a file the helper
// writes on the host.

// HelperCommand is the hidden outpost subcommand the helper container runs.
const HelperCommand = "backup-helper"

// helperPath is where the outpost binary is mounted in helper containers.
const helperPath = "/.outpost-helper/outpost"

// LabelHelper marks helper containers, so a leaked one can be found.
const LabelHelper = "io.outpost.helper"

// helperLifetime bounds how long an abandoned helper keeps running.
const helperLifetime = 24 * time.Hour

// RunHelper is the helper's side, run inside the container as
// `outpost backup-helper VERB ARGS`:
//
//	idle                      wait (up to 24 h) until stopped; exec sessions do the work
//	size DIR                  print the size a tar of DIR will have (estimate)
//	tar DIR                   write DIR as a tar stream to stdout
//	untar DIR                 empty DIR and extract the tar stream on stdin into it
//	reset DIR UID GID MODE    empty DIR and give it that owner and octal mode
//
// Warnings go to stderr.
func RunHelper(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	warn := func(msg string) { fmt.Fprintln(stderr, "warning:", msg) }
	if len(args) == 0 {
		return errors.New("backup-helper: missing verb (idle, size, tar, untar, reset)")
	}
	switch verb := args[0]; {
	case verb == "idle" && len(args) == 1:
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
		defer stop()
		select {
		case <-ctx.Done():
		case <-time.After(helperLifetime):
		}
		return nil
	case verb == "size" && len(args) == 2:
		n, err := tarSize(args[1])
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, n)
		return err
	case verb == "tar" && len(args) == 2:
		return writeTar(args[1], stdout, warn)
	case verb == "untar" && len(args) == 2:
		return extractTar(stdin, args[1], warn)
	case verb == "reset" && len(args) == 5:
		uid, err1 := strconv.Atoi(args[2])
		gid, err2 := strconv.Atoi(args[3])
		mode, err3 := strconv.ParseInt(args[4], 8, 32)
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("backup-helper reset: %w", err)
		}
		return resetDir(args[1], uid, gid, mode)
	default:
		return fmt.Errorf("backup-helper: unknown invocation %q", strings.Join(args, " "))
	}
}

// helper is a running helper container with one volume mounted.
type helper struct {
	eng    engine.Engine
	id     string
	name   string
	target string
}

// helperFor picks where a volume is mounted and which image runs the
// helper: the first service (by name) that mounts it, else any service.
func helperFor(app *model.Appliance, key string) (image, target string) {
	for _, name := range app.ServiceNames() {
		svc := app.Services[name]
		for _, m := range svc.Mounts {
			if m.Type == model.MountVolume && m.Source == key {
				return svc.Image, m.Target
			}
		}
	}
	for _, name := range app.ServiceNames() {
		return app.Services[name].Image, "/volume"
	}
	return "", "/volume"
}

// startHelper creates and starts a helper container for volume (Podman
// name) mounted at target, running image with the outpost binary bin.
func startHelper(ctx context.Context, eng engine.Engine, appName, image, volume, target, bin string) (*helper, error) {
	if image == "" {
		return nil, fmt.Errorf("no image to run the helper for volume %s: the appliance has no services", volume)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s-backup-%s", appName, hex.EncodeToString(suffix))
	spec := engine.ContainerSpec{
		Name:          name,
		Image:         image,
		Entrypoint:    []string{helperPath},
		EntrypointSet: true,
		Command:       []string{HelperCommand, "idle"},
		// Root of the user namespace: it may read and chown every file
		// the appliance's containers own.
		User:       "0:0",
		WorkingDir: "/",
		Mounts: []engine.MountSpec{
			{Type: "volume", Source: volume, Target: target},
			{Type: "bind", Source: bin, Target: helperPath, ReadOnly: true},
		},
		StopTimeout: time.Second,
		Labels:      map[string]string{engine.LabelAppliance: appName, LabelHelper: "backup"},
	}
	id, err := eng.CreateContainer(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("creating helper container for volume %s: %w", volume, err)
	}
	h := &helper{eng: eng, id: id, name: name, target: target}
	if err := eng.StartContainer(ctx, id); err != nil {
		var logs bytes.Buffer
		_ = eng.Logs(context.WithoutCancel(ctx), id, engine.LogOptions{Tail: 20}, &logs)
		h.remove()
		return nil, fmt.Errorf("starting helper container for volume %s: %w %s", volume, err, strings.TrimSpace(logs.String()))
	}
	// Wait until it runs: exec needs a running container.
	for i := 0; ; i++ {
		c, err := eng.InspectContainer(ctx, id)
		if err == nil && c.Running {
			return h, nil
		}
		if err == nil && !c.Running && c.State != "created" && c.State != "initialized" {
			var logs bytes.Buffer
			_ = eng.Logs(context.WithoutCancel(ctx), id, engine.LogOptions{Tail: 20}, &logs)
			h.remove()
			return nil, fmt.Errorf("helper container for volume %s exited with code %d: %s (is %s a static outpost binary on a filesystem mounted without noexec?)",
				volume, c.ExitCode, strings.TrimSpace(logs.String()), bin)
		}
		if i > 100 || ctx.Err() != nil {
			h.remove()
			return nil, fmt.Errorf("helper container for volume %s did not start", volume)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run execs the helper binary with args in the container.
func (h *helper) run(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) (warnings []string, err error) {
	stderr := &limitedBuffer{limit: 64 << 10}
	code, err := h.eng.ExecStream(ctx, h.id, append([]string{helperPath, HelperCommand}, args...), engine.ExecIO{Stdin: stdin, Stdout: stdout, Stderr: stderr})
	msg := strings.TrimSpace(stderr.String())
	for _, line := range strings.Split(msg, "\n") {
		if w, ok := strings.CutPrefix(line, "warning: "); ok {
			warnings = append(warnings, w)
		}
	}
	if err != nil {
		return warnings, err
	}
	if code != 0 {
		return warnings, fmt.Errorf("helper %s exited with code %d: %s", args[0], code, lastLines(msg, 10))
	}
	return warnings, nil
}

// remove removes the helper container (killing it).
func (h *helper) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = h.eng.RemoveContainer(ctx, h.id)
}

// removeStaleHelpers removes helper containers a killed backup or restore
// of the appliance left behind; the caller holds the appliance's backup
// lock, so none of them is in use.
func removeStaleHelpers(ctx context.Context, eng engine.Engine, app string) {
	for _, kind := range []string{"backup", "restore"} {
		cs, err := eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app, LabelHelper: kind})
		if err != nil {
			return
		}
		for _, c := range cs {
			_ = eng.RemoveContainer(ctx, c.ID)
		}
	}
}

// helperBinary resolves the outpost binary to mount into helpers.
func helperBinary(bin string) (string, error) {
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("finding the outpost binary for the helper container: %w", err)
		}
		bin = exe
	}
	abs, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return "", fmt.Errorf("finding the outpost binary for the helper container: %w", err)
	}
	if fi, err := os.Stat(abs); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("the outpost binary %s is not a regular file: the helper container runs it", abs)
	}
	return abs, nil
}

// limitedBuffer keeps the last limit bytes written.
type limitedBuffer struct {
	limit int
	buf   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - l.limit; over > 0 {
		l.buf = l.buf[over:]
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.buf) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
