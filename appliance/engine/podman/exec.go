package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	dockerContainer "github.com/docker/docker/api/types/container"

	"github.com/containers/podman/v5/pkg/api/handlers"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/outpostdev/outpost/appliance/engine"
)

// execOutputLimit is how much of an exec's combined output is kept (the
// tail: errors are usually printed last).
const execOutputLimit = 8 << 10

// Exec runs cmd in a running container and returns its exit code and its
// combined stdout and stderr (the last 8 KiB). When ctx ends first, Exec
// returns an error saying it timed out (or was canceled) with the output so
// far. From Podman 4.8 on the process is then killed; before, Podman has no
// call to stop an exec session and it keeps running in the container, so
// commands run this way should bound their own run time (e.g.
// `timeout 5 wget ...`).
func (e *Engine) Exec(ctx context.Context, id string, cmd []string) (engine.ExecResult, error) {
	res := engine.ExecResult{ExitCode: -1}
	if len(cmd) == 0 {
		return res, fmt.Errorf("exec in container %s: empty command", id)
	}
	start := time.Now()
	cctx := e.callCtx(ctx)
	sid, err := containers.ExecCreate(cctx, id, &handlers.ExecCreateConfig{ExecOptions: dockerContainer.ExecOptions{
		Cmd:          cmd,
		AttachStdout: true,
		AttachStderr: true,
	}})
	if err != nil {
		return res, apiErr(fmt.Sprintf("exec %q in container %s: creating session", cmd, id), err)
	}

	out := &tailBuffer{limit: execOutputLimit}
	err = e.execAttach(cctx, sid, out)
	res.Output = out.String()
	if ctx.Err() != nil {
		e.abandonExec(sid)
		return res, execCtxErr(ctx, cmd, id, time.Since(start))
	}
	if err != nil {
		e.abandonExec(sid)
		return res, fmt.Errorf("exec %q in container %s: reading output: %w", cmd, id, err)
	}

	// The stream ends when the process exits; the exit code may land in
	// the session a moment later.
	settle := time.Now().Add(5 * time.Second)
	for {
		insp, err := containers.ExecInspect(cctx, sid, nil)
		if err != nil {
			if ctx.Err() != nil {
				return res, execCtxErr(ctx, cmd, id, time.Since(start))
			}
			return res, apiErr(fmt.Sprintf("exec %q in container %s: reading exit code", cmd, id), err)
		}
		if !insp.Running {
			res.ExitCode = insp.ExitCode
			break
		}
		if time.Now().After(settle) {
			return res, fmt.Errorf("exec %q in container %s: output ended but the session still runs after 5s", cmd, id)
		}
		select {
		case <-ctx.Done():
			e.abandonExec(sid)
			return res, execCtxErr(ctx, cmd, id, time.Since(start))
		case <-time.After(20 * time.Millisecond):
		}
	}
	if e.serviceAtLeast(4, 8) {
		// Older services remove finished sessions themselves, later.
		_ = containers.ExecRemove(cctx, sid, nil)
	}
	return res, nil
}

// abandonExec kills and removes an exec session where the service can
// (Podman 4.8+); older services leave it running.
func (e *Engine) abandonExec(sid string) {
	if !e.serviceAtLeast(4, 8) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = containers.ExecRemove(e.callCtx(ctx), sid, new(containers.ExecRemoveOptions).WithForce(true))
}

func execCtxErr(ctx context.Context, cmd []string, id string, after time.Duration) error {
	what := "was canceled"
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		what = "timed out"
	}
	return fmt.Errorf("exec %q in container %s: %s after %s: %w", cmd, id, what, after.Round(time.Millisecond), ctx.Err())
}

// execAttach starts an exec session and copies its multiplexed output to w
// until the process ends or ctx does. It does what
// containers.ExecStartAndAttach does without that function's swap of the
// shared connection's HTTP transport, which races with concurrent calls, and
// it closes the stream when ctx ends (a hijacked stream ignores ctx).
func (e *Engine) execAttach(ctx context.Context, sid string, w io.Writer) error {
	conn, err := bindings.GetClient(ctx)
	if err != nil {
		return err
	}
	headers := http.Header{
		"Connection":   []string{"Upgrade"},
		"Upgrade":      []string{"tcp"},
		"Content-Type": []string{"application/json"},
	}
	resp, err := conn.DoRequest(ctx, strings.NewReader(`{"Detach":false,"Tty":false}`), http.MethodPost, "/exec/%s/start", nil, headers, sid)
	if err != nil {
		return fmt.Errorf("starting session: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("starting session: %w", resp.Process(nil))
	}
	stop := context.AfterFunc(ctx, func() { resp.Body.Close() })
	defer stop()

	buf := make([]byte, 1024)
	for {
		fd, n, err := containers.DemuxHeader(resp.Body, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		frame, err := containers.DemuxFrame(resp.Body, buf, n)
		if err != nil {
			return err
		}
		switch fd {
		case 1, 2:
			_, _ = w.Write(frame)
		case 3:
			return fmt.Errorf("service reported: %s", frame)
		}
	}
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	mu    sync.Mutex
	limit int
	buf   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
