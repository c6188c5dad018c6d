package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// forgeHolder rewrites the recorded holder of lock name, as if another
// process had taken it.
func forgeHolder(t *testing.T, s *Store, name string, pid int, bootID string, start uint64) {
	t.Helper()
	if _, err := s.db.Exec(`INSERT INTO locks (name, token, owner, pid, hostname, boot_id, start_time, acquired_at)
		VALUES (?, 'forged', 'outpost upgrade', ?, 'box', ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET token = 'forged', pid = excluded.pid, boot_id = excluded.boot_id,
			start_time = excluded.start_time`,
		name, pid, bootID, start, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
}

func TestLockRefusedForLiveHolder(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	a, b := openTest(t, path), openTest(t, path)

	release, err := a.AcquireLock(ctx, "writer", "outpost up")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.AcquireLock(ctx, "writer", "outpost upgrade")
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second AcquireLock: %v, want *LockedError", err)
	}
	if le.PID != os.Getpid() || le.Holder != "outpost up" || le.Since.IsZero() {
		t.Errorf("LockedError = %+v", le)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("pid %d", os.Getpid()), "outpost up", "kill"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	// Other lock names are independent.
	if rel, err := b.AcquireLock(ctx, "backup", "outpost backup"); err != nil {
		t.Errorf("other lock: %v", err)
	} else if err := rel(); err != nil {
		t.Error(err)
	}

	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Errorf("second release: %v", err)
	}
	rel, err := b.AcquireLock(ctx, "writer", "outpost upgrade")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	defer rel()
	h, err := a.LockHolderOf(ctx, "writer")
	if err != nil || h.Owner != "outpost upgrade" {
		t.Errorf("LockHolderOf = %+v, %v", h, err)
	}
}

func TestLockRefusedForLiveOtherProcess(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	start, _, err := procStart(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := selfIdentity()
	forgeHolder(t, s, "writer", cmd.Process.Pid, self.bootID, start)
	var le *LockedError
	if _, err := s.AcquireLock(ctx, "writer", "outpost up"); !errors.As(err, &le) || le.PID != cmd.Process.Pid {
		t.Fatalf("AcquireLock held by live sleep: %v", err)
	}
}

func TestLockTakeoverAfterDeadPID(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	path := filepath.Join(t.TempDir(), "outpost.db")
	s, err := Open(ctx, path, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	start, _, err := procStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	self, _ := selfIdentity()
	forgeHolder(t, s, "writer", pid, self.bootID, start)

	release, stale, err := s.AcquireLockReport(ctx, "writer", "outpost up")
	if err != nil {
		t.Fatalf("AcquireLock over dead pid %d: %v", pid, err)
	}
	if stale == nil || stale.Holder.PID != pid || stale.Holder.Owner != "outpost upgrade" || stale.Reason == "" {
		t.Fatalf("stale = %+v, want holder pid %d", stale, pid)
	}
	h, _ := s.LockHolderOf(ctx, "writer")
	if h.PID != os.Getpid() || h.Owner != "outpost up" {
		t.Errorf("holder after takeover = %+v", h)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}

	// AcquireLock logs the stale holder.
	forgeHolder(t, s, "writer", pid, self.bootID, start)
	rel, err := s.AcquireLock(ctx, "writer", "outpost up")
	if err != nil {
		t.Fatal(err)
	}
	defer rel()
	if out := logs.String(); !strings.Contains(out, "took over a stale writer lock") || !strings.Contains(out, fmt.Sprintf("pid=%d", pid)) {
		t.Errorf("log = %q", out)
	}
}

func TestLockTakeoverAfterRebootOrPIDReuse(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	self, err := selfIdentity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		bootID string
		start  uint64
		reason string
	}{
		{"reboot", "another-boot", self.startTime, "boot id"},
		{"pid reused", self.bootID, self.startTime + 1, "start time"},
	} {
		// Our own live PID, but from another boot or another process life.
		forgeHolder(t, s, "writer", os.Getpid(), tc.bootID, tc.start)
		release, stale, err := s.AcquireLockReport(ctx, "writer", "outpost up")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if stale == nil || !strings.Contains(stale.Reason, tc.reason) {
			t.Errorf("%s: stale = %+v, want reason about %s", tc.name, stale, tc.reason)
		}
		if err := release(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLockReleaseAfterTakeoverAndClose(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	a, b := openTest(t, path), openTest(t, path)
	release, err := a.AcquireLock(ctx, "writer", "outpost up")
	if err != nil {
		t.Fatal(err)
	}
	// Someone judged us dead and took over: our release must not free
	// their lock.
	forgeHolder(t, b, "writer", 1, "another-boot", 0)
	if err := release(); !errors.Is(err, ErrLockLost) {
		t.Errorf("release after takeover: %v, want ErrLockLost", err)
	}
	if h, err := b.LockHolderOf(ctx, "writer"); err != nil || h.PID != 1 {
		t.Errorf("holder = %+v, %v; want the forged one kept", h, err)
	}

	// Close releases what a Store still holds.
	if _, err := b.AcquireLock(ctx, "backup", "outpost backup"); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := a.LockHolderOf(ctx, "backup"); !errors.Is(err, ErrNotFound) {
		t.Errorf("lock after Close: %v, want ErrNotFound", err)
	}
}

func TestConcurrentWritersTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	stores := []*Store{openTest(t, path), openTest(t, path)}
	const workers, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, len(stores)*workers*rounds)
	ports := make(chan uint16, len(stores)*workers*rounds)
	for si, s := range stores {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < rounds; i++ {
					app := fmt.Sprintf("app%d", w)
					if err := s.AddEvent(ctx, Event{Appliance: app, Kind: "test", Message: fmt.Sprint(si, i)}); err != nil {
						errs <- err
					}
					id, err := s.CreateRevision(ctx, Revision{Appliance: app, Status: RevisionApplying})
					if err != nil {
						errs <- err
						continue
					}
					if err := s.SetRevisionStatus(ctx, id, RevisionActive); err != nil {
						errs <- err
					}
					p, err := s.AllocatePort(ctx, app, fmt.Sprintf("svc-%d-%d", si, i), 80, "tcp", lowestFree)
					if err != nil {
						errs <- err
					}
					ports <- p
					if err := s.Set(ctx, fmt.Sprint("k", w), fmt.Sprint(i)); err != nil {
						errs <- err
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	close(ports)
	for err := range errs {
		t.Error(err)
	}
	seen := map[uint16]bool{}
	for p := range ports {
		if seen[p] {
			t.Errorf("port %d allocated twice", p)
		}
		seen[p] = true
	}
	evs, err := stores[0].Events(ctx, "", 0, 0)
	if err != nil || len(evs) != len(stores)*workers*rounds {
		t.Errorf("%d events, %v; want %d", len(evs), err, len(stores)*workers*rounds)
	}
	for w := 0; w < workers; w++ {
		revs, _ := stores[1].Revisions(ctx, fmt.Sprintf("app%d", w))
		active := 0
		for _, r := range revs {
			if r.Status == RevisionActive {
				active++
			}
		}
		if active != 1 {
			t.Errorf("app%d has %d active revisions, want 1", w, active)
		}
	}
}
