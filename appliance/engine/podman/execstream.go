package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
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

// ExecStream runs cmd in a running container with its standard streams
// connected to streams, for output too large to hold in memory (a database
// dump) and input that must reach the process (a dump to load). Stdin is
// copied until EOF, then the write half of the connection is closed so the
// process sees end of input. It returns the process's exit code.
//
// Like Exec, it does not use containers.ExecStartAndAttach, which swaps the
// shared connection's HTTP transport (a race with concurrent calls): each
// call dials its own connection through a cloned transport, so it can also
// half-close it. When ctx ends the stream is closed; Podman before 4.8 has
// no call to kill the process, which may keep running in the container.
func (e *Engine) ExecStream(ctx context.Context, id string, cmd []string, streams engine.ExecIO) (int, error) {
	if len(cmd) == 0 {
		return -1, fmt.Errorf("exec in container %s: empty command", id)
	}
	start := time.Now()
	cctx := e.callCtx(ctx)
	sid, err := containers.ExecCreate(cctx, id, &handlers.ExecCreateConfig{ExecOptions: dockerContainer.ExecOptions{
		Cmd:          cmd,
		User:         streams.User,
		AttachStdin:  streams.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	}})
	if err != nil {
		return -1, apiErr(fmt.Sprintf("exec %q in container %s: creating session", cmd, id), err)
	}
	stdout, stderr := streams.Stdout, streams.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	err = e.execStreamAttach(cctx, sid, streams.Stdin, stdout, stderr)
	if ctx.Err() != nil {
		e.abandonExec(sid)
		return -1, execCtxErr(ctx, cmd, id, time.Since(start))
	}
	if err != nil {
		e.abandonExec(sid)
		return -1, fmt.Errorf("exec %q in container %s: %w", cmd, id, err)
	}
	code, err := e.execExitCode(ctx, sid)
	if err != nil {
		return -1, fmt.Errorf("exec %q in container %s: %w", cmd, id, err)
	}
	return code, nil
}

// execExitCode waits for a session whose output has ended to report its
// exit code, then removes it where the service allows.
func (e *Engine) execExitCode(ctx context.Context, sid string) (int, error) {
	cctx := e.callCtx(ctx)
	// The stream ends when the process exits; the exit code may land in
	// the session a moment later.
	settle := time.Now().Add(5 * time.Second)
	for {
		insp, err := containers.ExecInspect(cctx, sid, nil)
		if err != nil {
			return -1, apiErr("reading exit code", err)
		}
		if !insp.Running {
			if e.serviceAtLeast(4, 8) {
				_ = containers.ExecRemove(cctx, sid, nil)
			}
			return insp.ExitCode, nil
		}
		if time.Now().After(settle) {
			return -1, errors.New("output ended but the session still runs after 5s")
		}
		select {
		case <-ctx.Done():
			e.abandonExec(sid)
			return -1, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// execStreamAttach starts session sid on a connection of its own and pumps
// stdin into it and its demultiplexed output out of it.
func (e *Engine) execStreamAttach(ctx context.Context, sid string, stdin io.Reader, stdout, stderr io.Writer) error {
	shared, err := bindings.GetClient(ctx)
	if err != nil {
		return err
	}
	base, ok := shared.Client.Transport.(*http.Transport)
	if !ok {
		return fmt.Errorf("podman connection has an unexpected transport %T", shared.Client.Transport)
	}
	// A transport of our own: the dialed socket is ours to half-close, and
	// the shared client is left alone.
	var (
		sockMu sync.Mutex
		sock   net.Conn
	)
	tr := base.Clone()
	dial := base.DialContext
	tr.DisableKeepAlives = true
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		if dial != nil {
			c, err = dial(ctx, network, addr)
		} else {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
		}
		if err == nil {
			sockMu.Lock()
			sock = c
			sockMu.Unlock()
		}
		return c, err
	}
	defer tr.CloseIdleConnections()
	own := *shared
	own.Client = &http.Client{Transport: tr}

	headers := http.Header{
		"Connection":   []string{"Upgrade"},
		"Upgrade":      []string{"tcp"},
		"Content-Type": []string{"application/json"},
	}
	resp, err := own.DoRequest(ctx, strings.NewReader(`{"Detach":false,"Tty":false}`), http.MethodPost, "/exec/%s/start", nil, headers, sid)
	if err != nil {
		return fmt.Errorf("starting session: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("starting session: %w", resp.Process(nil))
	}
	sockMu.Lock()
	conn := sock
	sockMu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		resp.Body.Close()
		if conn != nil {
			conn.Close()
		}
	})
	defer stop()

	stdinErr := make(chan error, 1)
	if stdin != nil {
		if conn == nil {
			return errors.New("starting session: no connection to send input on")
		}
		go func() {
			_, err := io.Copy(conn, stdin)
			if err == nil {
				if cw, ok := conn.(interface{ CloseWrite() error }); ok {
					err = cw.CloseWrite()
				}
			}
			stdinErr <- err
		}()
	} else {
		stdinErr <- nil
	}

	buf := make([]byte, 32<<10)
	var outErr error
	for {
		fd, n, err := containers.DemuxHeader(resp.Body, buf)
		if err != nil {
			// A process that exits without reading all its input makes
			// the service close the connection with input unread, which
			// the kernel answers with a reset: that too is the end.
			if !errors.Is(err, io.EOF) && !(stdin != nil && isBrokenPipe(err)) {
				outErr = fmt.Errorf("reading output: %w", err)
			}
			break
		}
		if n > len(buf) {
			buf = make([]byte, n)
		}
		frame, err := containers.DemuxFrame(resp.Body, buf, n)
		if err != nil {
			outErr = fmt.Errorf("reading output: %w", err)
			break
		}
		switch fd {
		case 1:
			if _, err := stdout.Write(frame); err != nil {
				// The consumer failed (e.g. disk full): stop the stream.
				resp.Body.Close()
				return fmt.Errorf("writing output: %w", err)
			}
		case 2:
			if _, err := stderr.Write(frame); err != nil {
				resp.Body.Close()
				return fmt.Errorf("writing error output: %w", err)
			}
		case 3:
			return fmt.Errorf("service reported: %s", frame)
		}
	}
	if outErr != nil {
		return outErr
	}
	// The output ended, so the process did: input it did not read is not
	// an error (a process may stop reading early), a failing reader is.
	select {
	case err := <-stdinErr:
		if err != nil && !errors.Is(err, net.ErrClosed) && !isBrokenPipe(err) {
			return fmt.Errorf("sending input: %w", err)
		}
	case <-time.After(100 * time.Millisecond):
	}
	return nil
}

func isBrokenPipe(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset")
}

// PauseContainer freezes a running container's processes. Rootless Podman
// on cgroups v1 refuses: the error says so and callers stop it instead.
func (e *Engine) PauseContainer(ctx context.Context, id string) error {
	if err := containers.Pause(e.callCtx(ctx), id, nil); err != nil {
		return apiErr("pausing container "+id, err)
	}
	return nil
}

// UnpauseContainer resumes a paused container.
func (e *Engine) UnpauseContainer(ctx context.Context, id string) error {
	if err := containers.Unpause(e.callCtx(ctx), id, nil); err != nil {
		return apiErr("unpausing container "+id, err)
	}
	return nil
}
