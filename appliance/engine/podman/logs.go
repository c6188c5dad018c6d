package podman

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/outpostdev/outpost/appliance/engine"
)

// Logs writes a container's logs, stdout and stderr interleaved, to w, one
// line per write. With Follow it returns when the container stops or when
// ctx ends, the latter without error.
func (e *Engine) Logs(ctx context.Context, id string, opts engine.LogOptions, w io.Writer) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()

	lo := new(containers.LogOptions).WithStdout(true).WithStderr(true).WithFollow(opts.Follow)
	if opts.Tail > 0 {
		lo = lo.WithTail(strconv.Itoa(opts.Tail))
	}
	if !opts.Since.IsZero() {
		lo = lo.WithSince(opts.Since.Format(time.RFC3339Nano))
	}

	stdout := make(chan string)
	stderr := make(chan string)
	done := make(chan error, 1)
	go func() { done <- containers.Logs(e.callCtx(lctx), id, lo, stdout, stderr) }()

	// containers.Logs sends on the channels synchronously, so every line has
	// been received once it returns; keep receiving until then even after
	// a write error, or it would block forever.
	var writeErr error
	write := func(line string) {
		if writeErr != nil {
			return
		}
		if _, err := io.WriteString(w, line); err != nil {
			writeErr = err
			cancel()
		}
	}
	for {
		select {
		case line := <-stdout:
			write(line)
		case line := <-stderr:
			write(line)
		case err := <-done:
			switch {
			case writeErr != nil:
				return fmt.Errorf("writing logs of container %s: %w", id, writeErr)
			case err != nil && ctx.Err() != nil && opts.Follow:
				return nil
			case err != nil:
				return apiErr("reading logs of container "+id, err)
			}
			return nil
		}
	}
}
