package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrLocked is returned (wrapped in a *LockedError) when a writer lock is
// held by a live process.
var ErrLocked = errors.New("state is locked by another outpost process")

// ErrLockLost is returned (wrapped) by a lock's release function when the
// lock was taken over meanwhile (its holder was judged dead).
var ErrLockLost = errors.New("lock was taken over by another process")

// LockedError says who holds a writer lock. It wraps ErrLocked.
type LockedError struct {
	// Name is the lock's name.
	Name string
	// Holder is the holder's owner string (what it was doing), e.g. "outpost upgrade".
	Holder string
	// PID is the holding process.
	PID int
	// Host is the hostname it runs on.
	Host string
	// Since is when it took the lock.
	Since time.Time
}

// Error says who holds the lock and what to do about it.
func (e *LockedError) Error() string {
	return fmt.Sprintf("%s: lock %q is held by %q (pid %d on %s) since %s; wait for it to finish, or stop it (kill %d) and retry",
		ErrLocked, e.Name, e.Holder, e.PID, e.Host, e.Since.Local().Format(time.RFC3339), e.PID)
}

// Unwrap returns ErrLocked.
func (e *LockedError) Unwrap() error { return ErrLocked }

// LockHolder is the recorded identity of a writer lock's holder.
type LockHolder struct {
	// Name is the lock's name.
	Name string
	// Owner is what the holder said it was doing.
	Owner string
	// PID, Hostname and BootID identify the process and the boot it ran in.
	PID      int
	Hostname string
	BootID   string
	// StartTime is the process start time in clock ticks after boot (field 22
	// of /proc/<pid>/stat), which tells a reused PID from the holder.
	StartTime uint64
	// Since is when it took the lock.
	Since time.Time
}

// String describes the holder for messages.
func (h LockHolder) String() string {
	return fmt.Sprintf("%q (pid %d on %s since %s)", h.Owner, h.PID, h.Hostname, h.Since.Local().Format(time.RFC3339))
}

// LogValue groups the holder's fields for slog.
func (h LockHolder) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("lock", h.Name),
		slog.String("owner", h.Owner),
		slog.Int("pid", h.PID),
		slog.String("host", h.Hostname),
		slog.String("boot_id", h.BootID),
		slog.Time("since", h.Since),
	)
}

// StaleLock describes a lock taken over from a holder that was no longer
// alive.
type StaleLock struct {
	// Holder is the dead holder.
	Holder LockHolder
	// Reason says why it was judged dead.
	Reason string
}

// LogValue groups the stale holder and the reason for slog.
func (s StaleLock) LogValue() slog.Value {
	return slog.GroupValue(slog.Any("holder", s.Holder), slog.String("reason", s.Reason))
}

// AcquireLock takes the named writer lock for owner (a short description such
// as "outpost upgrade"), recording this process's PID, hostname, boot ID and
// start time. The lock lives in the database, so it outlives a crash; a lock
// whose holder is gone (PID gone, different boot, or PID reused) is taken
// over and the stale holder logged with the Store's logger at warn level. A
// lock held by a live process, this one included, fails with a *LockedError.
//
// The lock only tells processes on this host apart: the state directory must
// be on a local filesystem. release removes the lock; it is idempotent.
func (s *Store) AcquireLock(ctx context.Context, name, owner string) (release func() error, err error) {
	release, stale, err := s.AcquireLockReport(ctx, name, owner)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		s.log.WarnContext(ctx, "took over a stale writer lock", "stale", stale)
	}
	return release, nil
}

// AcquireLockReport is AcquireLock that returns the stale holder it took the
// lock over from (nil when the lock was free) instead of logging it.
func (s *Store) AcquireLockReport(ctx context.Context, name, owner string) (release func() error, stale *StaleLock, err error) {
	step := fmt.Sprintf("acquiring lock %q", name)
	if name == "" {
		return nil, nil, fmt.Errorf("%s: empty lock name", step)
	}
	self, err := selfIdentity()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", step, err)
	}
	token, err := newToken()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", step, err)
	}
	err = s.inTx(ctx, step, func(tx *sql.Tx) error {
		var h LockHolder
		var since int64
		err := tx.QueryRowContext(ctx,
			"SELECT name, owner, pid, hostname, boot_id, start_time, acquired_at FROM locks WHERE name = ?", name).
			Scan(&h.Name, &h.Owner, &h.PID, &h.Hostname, &h.BootID, &h.StartTime, &since)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("reading holder: %w", err)
		default:
			h.Since = time.Unix(0, since).UTC()
			alive, reason := holderAlive(h, self)
			if alive {
				return &LockedError{Name: name, Holder: h.Owner, PID: h.PID, Host: h.Hostname, Since: h.Since}
			}
			stale = &StaleLock{Holder: h, Reason: reason}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO locks
			(name, token, owner, pid, hostname, boot_id, start_time, acquired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET token = excluded.token, owner = excluded.owner, pid = excluded.pid,
				hostname = excluded.hostname, boot_id = excluded.boot_id, start_time = excluded.start_time,
				acquired_at = excluded.acquired_at`,
			name, token, owner, self.pid, self.hostname, self.bootID, self.startTime, time.Now().UnixNano())
		if err != nil {
			return fmt.Errorf("recording holder: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.locks[name] = token
	s.mu.Unlock()

	var once sync.Once
	var rerr error
	release = func() error {
		once.Do(func() { rerr = s.releaseLock(name, token) })
		return rerr
	}
	return release, stale, nil
}

func (s *Store) releaseLock(name, token string) error {
	s.mu.Lock()
	held := s.locks[name] == token
	if held {
		delete(s.locks, name)
	}
	s.mu.Unlock()
	if !held {
		return nil // released by Close
	}
	// Not the caller's context: a lock must be released even when the work
	// it guarded was cancelled.
	res, err := s.db.Exec("DELETE FROM locks WHERE name = ? AND token = ?", name, token)
	if err != nil {
		return fmt.Errorf("releasing lock %q: %w", name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("releasing lock %q: %w", name, ErrLockLost)
	}
	return nil
}

// LockHolderOf returns the recorded holder of the named lock, or ErrNotFound
// when it is free. The holder may be dead; AcquireLock decides that.
func (s *Store) LockHolderOf(ctx context.Context, name string) (LockHolder, error) {
	var h LockHolder
	var since int64
	err := s.db.QueryRowContext(ctx,
		"SELECT name, owner, pid, hostname, boot_id, start_time, acquired_at FROM locks WHERE name = ?", name).
		Scan(&h.Name, &h.Owner, &h.PID, &h.Hostname, &h.BootID, &h.StartTime, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return LockHolder{}, fmt.Errorf("reading holder of lock %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return LockHolder{}, fmt.Errorf("reading holder of lock %q: %w", name, err)
	}
	h.Since = time.Unix(0, since).UTC()
	return h, nil
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating lock token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

type identity struct {
	pid       int
	hostname  string
	bootID    string
	startTime uint64
}

const bootIDPath = "/proc/sys/kernel/random/boot_id"

// selfIdentity describes this process; computed once.
var selfIdentity = sync.OnceValues(func() (identity, error) {
	id := identity{pid: os.Getpid()}
	id.hostname, _ = os.Hostname()
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return identity{}, fmt.Errorf("reading boot id: %w", err)
	}
	id.bootID = strings.TrimSpace(string(b))
	id.startTime, _, err = procStart(id.pid)
	if err != nil {
		return identity{}, fmt.Errorf("reading own start time: %w", err)
	}
	return id, nil
})

// holderAlive decides whether the recorded holder still runs. When in doubt
// (an unexpected /proc error) it answers alive: refusing is recoverable,
// two writers are not.
func holderAlive(h LockHolder, self identity) (bool, string) {
	if h.BootID != self.bootID {
		return false, "recorded in an earlier boot (boot id differs)"
	}
	start, state, err := procStart(h.PID)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "process " + strconv.Itoa(h.PID) + " no longer exists"
	}
	if err != nil {
		return true, ""
	}
	if state == 'Z' || state == 'X' {
		return false, "process " + strconv.Itoa(h.PID) + " has exited (zombie)"
	}
	if start != h.StartTime {
		return false, "pid " + strconv.Itoa(h.PID) + " now belongs to another process (start time differs)"
	}
	return true, ""
}

// procStart reads a process's start time (clock ticks after boot) and state
// from /proc/<pid>/stat.
func procStart(pid int) (start uint64, state byte, err error) {
	if pid <= 0 {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, fs.ErrNotExist)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces
	// and parentheses; the fields after the last ')' are plain.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: too few fields", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat start time: %w", pid, err)
	}
	return start, f[0][0], nil
}
