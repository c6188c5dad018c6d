package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	kservice "github.com/kardianos/service"
)

// ErrNoSystemd means the host's service manager is not systemd.
var ErrNoSystemd = errors.New("the service manager here is not systemd (PID 1 is not systemd); outpost install needs systemd — run `outpost run` under your own supervisor instead")

// Manager drives systemd for one unit: install (through kardianos/service),
// start, stop, restart, and what systemctl and journalctl say about it.
type Manager struct {
	unit string
	log  *slog.Logger
}

// NewManager returns a Manager for unit (without ".service"), or
// ErrNoSystemd.
func NewManager(unit string, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if sys := kservice.ChosenSystem(); sys == nil || sys.String() != "linux-systemd" {
		return nil, ErrNoSystemd
	}
	return &Manager{unit: unit, log: log}, nil
}

// Unit returns the unit's name with ".service".
func (m *Manager) Unit() string { return m.unit + ".service" }

// noop satisfies kservice.Interface: Outpost only controls the service
// here; `outpost run` is the program.
type noop struct{}

func (noop) Start(kservice.Service) error { return nil }
func (noop) Stop(kservice.Service) error  { return nil }

// svc returns the kardianos service for the unit; text, when not empty, is
// the complete unit file kardianos writes on Install.
func (m *Manager) svc(text string) (kservice.Service, error) {
	cfg := &kservice.Config{
		Name:        m.unit,
		Description: m.unit,
		// Only used by kardianos to find a path for its own template,
		// which text replaces.
		Executable: DefaultBinary,
		Option:     kservice.KeyValue{},
	}
	if text != "" {
		cfg.Option["SystemdScript"] = text
	}
	s, err := kservice.New(noop{}, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening service %s: %w", m.unit, err)
	}
	return s, nil
}

// Install writes the unit file (text) and enables the unit. It reports
// whether anything changed: an identical unit already in place is only
// re-enabled. A different one is replaced (kardianos uninstalls and
// installs it again, with a daemon-reload); the caller restarts a running
// service so the new unit takes effect.
func (m *Manager) Install(ctx context.Context, path, text string) (changed bool, err error) {
	// kardianos renders the text once more with its own template engine;
	// a unit file has no use for "{{", so refuse rather than mangle it.
	if strings.Contains(text, "{{") {
		return false, fmt.Errorf("installing %s: the rendered unit contains \"{{\"", m.Unit())
	}
	old, err := os.ReadFile(path)
	switch {
	case err == nil && string(old) == text:
		if err := m.systemctl(ctx, "enable", m.Unit()); err != nil {
			return false, err
		}
		return false, nil
	case err == nil:
		s, err := m.svc("")
		if err != nil {
			return false, err
		}
		if err := s.Uninstall(); err != nil {
			return false, fmt.Errorf("replacing unit %s: removing the old one: %w", m.Unit(), err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return false, fmt.Errorf("reading unit %s: %w", path, err)
	}
	s, err := m.svc(text)
	if err != nil {
		return false, err
	}
	if err := s.Install(); err != nil {
		return false, fmt.Errorf("installing unit %s: %w (see `journalctl -xe`)", m.Unit(), err)
	}
	m.log.Info("unit installed", "unit", m.Unit(), "path", path)
	return true, nil
}

// Uninstall disables and removes the unit file (stop it first).
func (m *Manager) Uninstall(ctx context.Context, path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	s, err := m.svc("")
	if err != nil {
		return err
	}
	if err := s.Uninstall(); err != nil {
		return fmt.Errorf("removing unit %s: %w", m.Unit(), err)
	}
	_ = m.systemctl(ctx, "reset-failed", m.Unit())
	return nil
}

// Start starts the unit and returns once systemd considers it started: for
// Outpost's Type=notify unit, once every service is healthy. A failed start
// is returned with the unit's status text and last journal lines.
func (m *Manager) Start(ctx context.Context) error {
	// A unit that failed before (or hit its start limit) starts afresh.
	_ = m.systemctl(ctx, "reset-failed", m.Unit())
	return m.action(ctx, "start", func(s kservice.Service) error { return s.Start() })
}

// Stop stops the unit: Outpost stops the containers in reverse dependency
// order first.
func (m *Manager) Stop(ctx context.Context) error {
	return m.action(ctx, "stop", func(s kservice.Service) error { return s.Stop() })
}

// Restart restarts the unit and waits until it is started again.
func (m *Manager) Restart(ctx context.Context) error {
	return m.action(ctx, "restart", func(s kservice.Service) error { return s.Restart() })
}

func (m *Manager) action(ctx context.Context, verb string, f func(kservice.Service) error) error {
	s, err := m.svc("")
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- f(s) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w (systemd carries on; see `systemctl status %s`)", verb, m.Unit(), ctx.Err(), m.Unit())
	}
	if err == nil {
		return nil
	}
	st, _ := m.Show(ctx)
	msg := fmt.Sprintf("%s %s failed (%v)", verb, m.Unit(), err)
	if st.StatusText != "" {
		msg += "; status: " + st.StatusText
	}
	if j := m.Journal(ctx, 25); j != "" {
		msg += "\nlast log lines (journalctl -u " + m.Unit() + "):\n" + j
	}
	return errors.New(msg)
}

// State is what systemd reports about the unit (`systemctl show`).
type State struct {
	Unit          string `json:"unit"`
	LoadState     string `json:"load_state"`
	ActiveState   string `json:"active_state"`
	SubState      string `json:"sub_state"`
	UnitFileState string `json:"unit_file_state"`
	// StatusText is the daemon's last STATUS= line.
	StatusText string `json:"status_text"`
	MainPID    int    `json:"main_pid"`
	// NRestarts counts automatic restarts since the unit was last started
	// by hand.
	NRestarts int    `json:"restarts"`
	Result    string `json:"result"`
	User      string `json:"user"`
	// ActiveSince is when the unit last became active (READY=1); zero
	// when it is not.
	ActiveSince time.Time `json:"active_since,omitzero"`
}

// Installed reports whether systemd knows the unit's file.
func (s State) Installed() bool { return s.LoadState != "" && s.LoadState != "not-found" }

// Show asks systemd for the unit's state.
func (m *Manager) Show(ctx context.Context) (State, error) {
	props := []string{"LoadState", "ActiveState", "SubState", "UnitFileState", "StatusText", "MainPID", "NRestarts", "Result", "User", "ActiveEnterTimestamp"}
	args := []string{"show", "--timestamp=unix", m.Unit()}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := m.output(ctx, "systemctl", args...)
	if err != nil {
		return State{Unit: m.Unit()}, err
	}
	return parseShow(m.Unit(), out), nil
}

// parseShow reads `systemctl show` KEY=value lines.
func parseShow(unit, out string) State {
	st := State{Unit: unit}
	var active time.Time
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "LoadState":
			st.LoadState = v
		case "ActiveState":
			st.ActiveState = v
		case "SubState":
			st.SubState = v
		case "UnitFileState":
			st.UnitFileState = v
		case "StatusText":
			st.StatusText = v
		case "MainPID":
			st.MainPID, _ = strconv.Atoi(v)
		case "NRestarts":
			st.NRestarts, _ = strconv.Atoi(v)
		case "Result":
			st.Result = v
		case "User":
			st.User = v
		case "ActiveEnterTimestamp":
			// --timestamp=unix prints "@1700000000"; older systemd
			// prints a local date, which is left zero.
			if sec, err := strconv.ParseInt(strings.TrimPrefix(v, "@"), 10, 64); err == nil && sec > 0 {
				active = time.Unix(sec, 0)
			}
		}
	}
	if st.ActiveState == "active" || st.ActiveState == "reloading" {
		st.ActiveSince = active
	}
	return st
}

// Journal returns the unit's last n journal lines, or "" when journalctl
// cannot tell.
func (m *Manager) Journal(ctx context.Context, n int) string {
	out, err := m.output(ctx, "journalctl", "-u", m.Unit(), "-n", strconv.Itoa(n), "--no-pager", "-o", "cat")
	if err != nil {
		return ""
	}
	return strings.TrimRight(out, "\n")
}

func (m *Manager) systemctl(ctx context.Context, args ...string) error {
	_, err := m.output(ctx, "systemctl", args...)
	return err
}

func (m *Manager) output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
