package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWaitStartedWaitsForTheDaemonsStart(t *testing.T) {
	d := &Daemon{starting: make(chan struct{})}
	var said []string
	progress := func(_, msg string) { said = append(said, msg) }
	done := make(chan error, 1)
	go func() { done <- d.waitStarted(context.Background(), progress) }()
	select {
	case err := <-done:
		t.Fatalf("returned before the start ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	d.endStart(nil)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after a successful start: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting after the start ended")
	}
	if len(said) != 1 || !strings.Contains(said[0], "still starting the appliance") {
		t.Errorf("progress while waiting: %q", said)
	}
	// Once started, no wait and nothing said.
	said = nil
	if err := d.waitStarted(context.Background(), progress); err != nil || len(said) != 0 {
		t.Errorf("after the start: err %v, said %q", err, said)
	}
}

func TestWaitStartedReportsAFailedStartAndAGoneClient(t *testing.T) {
	d := &Daemon{starting: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.waitStarted(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("client gone while waiting: %v", err)
	}
	d.endStart(errors.New("api: unhealthy"))
	err := d.waitStarted(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "failed to start the appliance") || !strings.Contains(err.Error(), "api: unhealthy") {
		t.Errorf("after a failed start: %v", err)
	}
}
