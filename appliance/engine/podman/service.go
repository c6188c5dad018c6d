package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServiceOptions configure StartService.
type ServiceOptions struct {
	// RuntimeDir holds the socket (podman.sock) and the generated
	// containers.conf; created 0700 if missing. Required; typically
	// $XDG_RUNTIME_DIR/outpost.
	RuntimeDir string
	// PodmanPath is the podman binary; default "podman" looked up in PATH.
	PodmanPath string
	// Logger receives the service's lifecycle events; default discards.
	Logger *slog.Logger
	// Stderr receives the service's stdout and stderr; default discards.
	// The last few KiB are kept either way for error messages.
	Stderr io.Writer
	// StartTimeout bounds waiting for the socket to answer; default 30s.
	StartTimeout time.Duration
}

// Service is a `podman system service` child process that Outpost started.
type Service struct {
	cmd    *exec.Cmd
	uri    string
	sock   string
	logger *slog.Logger
	output *tailBuffer
	done   chan struct{}
	err    error // set before done closes
}

// serviceOutputTail is how much of the service's output error messages
// quote.
const serviceOutputTail = 4 << 10

// StartService starts `podman system service --time=0` on
// unix://<RuntimeDir>/podman.sock with a containers.conf generated from the
// host's facts (see ContainersConf), and waits until the socket answers.
// The child gets its own process group (a Ctrl-C aimed at Outpost does not
// reach it, so Outpost can stop containers first) and SIGTERM when Outpost
// dies. ctx bounds only the start.
func StartService(ctx context.Context, opts ServiceOptions) (*Service, error) {
	if opts.RuntimeDir == "" {
		return nil, errors.New("starting podman service: no runtime directory given")
	}
	if opts.PodmanPath == "" {
		opts.PodmanPath = "podman"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	podman, err := exec.LookPath(opts.PodmanPath)
	if err != nil {
		return nil, fmt.Errorf("starting podman service: finding podman: %w (install podman, or run `outpost doctor`)", err)
	}
	if err := os.MkdirAll(opts.RuntimeDir, 0o700); err != nil {
		return nil, fmt.Errorf("starting podman service: creating runtime directory: %w", err)
	}

	version, err := podmanVersion(ctx, podman)
	if err != nil {
		return nil, fmt.Errorf("starting podman service: %w", err)
	}
	facts, err := DetectHost()
	if err != nil {
		return nil, fmt.Errorf("starting podman service: detecting host: %w", err)
	}
	// CONTAINERS_CONF_OVERRIDE (Podman 4.5+) is read after the system and
	// user files; older Podman only knows CONTAINERS_CONF, which replaces
	// them.
	confEnv := "CONTAINERS_CONF_OVERRIDE"
	if !version.atLeast(4, 5) {
		confEnv = "CONTAINERS_CONF"
		facts.Standalone = true
	}
	confPath := filepath.Join(opts.RuntimeDir, "containers.conf")
	if err := writeFileAtomic(confPath, []byte(ContainersConf(facts)), 0o600); err != nil {
		return nil, fmt.Errorf("starting podman service: writing %s: %w", confPath, err)
	}

	sock := filepath.Join(opts.RuntimeDir, "podman.sock")
	if pingSocket(ctx, sock) == nil {
		return nil, fmt.Errorf("starting podman service: %s already answers; stop the other service or set CONTAINER_HOST=unix://%s to use it", sock, sock)
	}
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("starting podman service: removing stale socket: %w", err)
	}

	s := &Service{
		uri:    "unix://" + sock,
		sock:   sock,
		logger: opts.Logger,
		output: &tailBuffer{limit: serviceOutputTail},
		done:   make(chan struct{}),
	}
	out := io.Writer(s.output)
	if opts.Stderr != nil {
		out = io.MultiWriter(s.output, opts.Stderr)
	}
	cmd := exec.Command(podman, "system", "service", "--time=0", s.uri)
	cmd.Env = append(filterEnv(os.Environ(), "CONTAINERS_CONF", "CONTAINERS_CONF_OVERRIDE", "CONTAINER_HOST"),
		confEnv+"="+confPath,
		// Outpost runs health probes itself; this keeps Podman from
		// needing systemd timers for images that declare a HEALTHCHECK.
		"DISABLE_HC_SYSTEMD=true",
	)
	cmd.Stdout = out
	cmd.Stderr = out
	// Pdeathsig fires when the thread that started the child exits; Go
	// only ends threads of goroutines that exit while locked to them,
	// which this one never is.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting podman service: %w", err)
	}
	s.cmd = cmd
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()

	if err := s.waitReady(ctx, opts.StartTimeout); err != nil {
		_ = s.Stop(context.Background())
		return nil, fmt.Errorf("starting podman service: %w", err)
	}
	opts.Logger.Info("podman service started", "pid", cmd.Process.Pid, "socket", sock,
		"podman_version", version.String(), "config", confPath, "config_env", confEnv, "runtime", facts.Runtime())
	return s, nil
}

// recoveryHint names the operator's next step for podman failures that have
// a known remedy, or returns "".
func recoveryHint(output string) string {
	if strings.Contains(output, "system migrate") {
		// The processes holding the rootless user namespace were killed
		// while Podman's state still lists running containers.
		return "\nrootless Podman lost the process holding its user namespace: run `podman system migrate` as this user (it marks the dead containers stopped) and retry"
	}
	return ""
}

func (s *Service) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			out := s.output.String()
			return fmt.Errorf("podman exited before its socket answered (%v); its output ends with:\n%s%s", s.err, out, recoveryHint(out))
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", s.sock, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("%s did not answer within %s; podman's output ends with:\n%s", s.sock, timeout, s.output.String())
		case <-tick.C:
			if pingSocket(ctx, s.sock) == nil {
				return nil
			}
		}
	}
}

// URI returns the service's unix:// URI for Connect.
func (s *Service) URI() string { return s.uri }

// Done is closed when the service process has exited.
func (s *Service) Done() <-chan struct{} { return s.done }

// Stop sends SIGTERM, waits up to 5s (or until ctx ends), then kills. It
// leaves containers running: conmon keeps them alive without the service.
func (s *Service) Stop(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping podman service: %w", err)
	}
	grace := time.NewTimer(5 * time.Second)
	defer grace.Stop()
	select {
	case <-s.done:
	case <-grace.C:
		s.logger.Warn("podman service ignored SIGTERM, killing it", "pid", s.cmd.Process.Pid)
		_ = s.cmd.Process.Kill()
		<-s.done
	case <-ctx.Done():
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.Remove(s.sock)
	s.logger.Info("podman service stopped", "pid", s.cmd.Process.Pid)
	return nil
}

// ResolveURI returns the Podman service to use: CONTAINER_HOST when set
// (stop does nothing), else a service started with StartService (stop
// stops it).
func ResolveURI(ctx context.Context, opts ServiceOptions) (uri string, stop func(), err error) {
	if h := os.Getenv("CONTAINER_HOST"); h != "" {
		return h, func() {}, nil
	}
	s, err := StartService(ctx, opts)
	if err != nil {
		return "", nil, err
	}
	return s.URI(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	}, nil
}

// pingSocket asks the service behind a unix socket for /_ping.
func pingSocket(ctx context.Context, sock string) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ping answered %s", resp.Status)
	}
	return nil
}

// semver is a major.minor.patch version.
type semver struct{ major, minor, patch int }

func (v semver) atLeast(major, minor int) bool {
	return v.major > major || (v.major == major && v.minor >= minor)
}

func (v semver) String() string { return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.patch) }

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

// parseVersion finds the first x.y[.z] in s ("podman version 4.3.1").
func parseVersion(s string) (semver, error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return semver{}, fmt.Errorf("no version in %q", strings.TrimSpace(s))
	}
	var v semver
	v.major, _ = strconv.Atoi(m[1])
	v.minor, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		v.patch, _ = strconv.Atoi(m[3])
	}
	return v, nil
}

func podmanVersion(ctx context.Context, podman string) (semver, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, podman, "--version").CombinedOutput()
	if err != nil {
		return semver{}, fmt.Errorf("running %s --version: %w: %s", podman, err, strings.TrimSpace(string(out)))
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return semver{}, fmt.Errorf("reading podman's version: %w", err)
	}
	return v, nil
}

func filterEnv(env []string, drop ...string) []string {
	out := env[:0:0]
outer:
	for _, kv := range env {
		for _, d := range drop {
			if strings.HasPrefix(kv, d+"=") {
				continue outer
			}
		}
		out = append(out, kv)
	}
	return out
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
