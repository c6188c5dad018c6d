package service

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Account is the system user an appliance runs as.
type Account struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	// Home is the user's home directory (the appliance's state dir).
	Home string `json:"home"`
	// Created is true when EnsureUser created the user now.
	Created bool `json:"-"`
}

// SubIDSize is the size of the subordinate UID/GID range a service user
// gets: what images with high IDs need.
const SubIDSize = 65536

// subIDFloor is where subordinate ranges start when none exist yet
// (useradd's default SUB_UID_MIN).
const subIDFloor = 100000

// LookupAccount returns the account called name, or an error wrapping
// user.UnknownUserError.
func LookupAccount(name string) (Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Account{}, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}, nil
}

// EnsureUser creates the system user of layout l unless it exists: its own
// group, home l.StateDir (created 0700, owned by it), no login shell. Either
// way it makes sure the user has subordinate UID and GID ranges of SubIDSize
// in /etc/subuid and /etc/subgid, which rootless Podman needs.
func EnsureUser(ctx context.Context, l Layout, log *slog.Logger) (Account, error) {
	acct, err := LookupAccount(l.User)
	var unknown user.UnknownUserError
	switch {
	case err == nil:
	case errors.As(err, &unknown):
		shell := "/usr/sbin/nologin"
		if _, err := os.Stat(shell); err != nil {
			shell = "/sbin/nologin"
		}
		out, err := exec.CommandContext(ctx, "useradd", "--system", "--user-group",
			"--home-dir", l.StateDir, "--no-create-home", "--shell", shell,
			"--comment", "Outpost appliance "+l.Appliance, l.User).CombinedOutput()
		if err != nil {
			return acct, fmt.Errorf("creating user %s: %w: %s (is useradd installed? it is in the passwd package)", l.User, err, strings.TrimSpace(string(out)))
		}
		if acct, err = LookupAccount(l.User); err != nil {
			return acct, fmt.Errorf("looking up user %s after creating it: %w", l.User, err)
		}
		acct.Created = true
		log.Info("service user created", "user", acct.Name, "uid", acct.UID)
	default:
		return acct, fmt.Errorf("looking up user %s: %w", l.User, err)
	}
	if err := MkdirOwned(l.StateDir, 0o700, acct.UID, acct.GID); err != nil {
		return acct, err
	}
	acct.Home = l.StateDir
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		added, err := EnsureSubIDs(f, acct.Name, SubIDSize)
		if err != nil {
			return acct, err
		}
		if added != "" {
			log.Info("subordinate IDs added", "file", f, "range", added)
		}
	}
	return acct, nil
}

// EnsureSubIDs gives name a range of size IDs in the subuid/subgid file at
// path, after every range already handed out, unless it has one. It returns
// the line added ("" when none was needed).
func EnsureSubIDs(path, name string, size int) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	line, ok := NextSubIDRange(string(data), name, size)
	if ok {
		return "", nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", path, err)
	}
	prefix := ""
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		prefix = "\n"
	}
	if _, err := f.WriteString(prefix + line + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("adding %s to %s: %w", name, path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("adding %s to %s: %w", name, path, err)
	}
	return line, nil
}

// NextSubIDRange reads a subuid/subgid file's content and returns whether
// name already has a range; when not, the line that gives it size IDs
// starting after the highest range in use.
func NextSubIDRange(content, name string, size int) (line string, has bool) {
	next := subIDFloor
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		f := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(f) != 3 {
			continue
		}
		if f[0] == name {
			return "", true
		}
		start, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && start+n > next {
			next = start + n
		}
	}
	return fmt.Sprintf("%s:%d:%d", name, next, size), false
}

// RemoveSubIDs deletes name's ranges from a subuid/subgid file.
func RemoveSubIDs(path, name string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			continue
		}
		keep = append(keep, l)
	}
	return writeAtomic(path, []byte(strings.Join(keep, "")), 0o644, -1, -1)
}

// MkdirOwned creates dir (and missing parents, root-owned 0755) and sets its
// mode and owner; an existing dir gets them too. Nothing below it changes.
func MkdirOwned(dir string, mode os.FileMode, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", dir, err)
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", dir, err)
	}
	return nil
}

// WriteFileOwned writes data to path atomically with mode and owner
// (uid/gid -1 keep root's), and reports whether the content changed.
func WriteFileOwned(path string, data []byte, mode os.FileMode, uid, gid int) (changed bool, err error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		if err := os.Chmod(path, mode); err != nil {
			return false, fmt.Errorf("setting the mode of %s: %w", path, err)
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return false, fmt.Errorf("setting the owner of %s: %w", path, err)
		}
		return false, nil
	}
	return true, writeAtomic(path, data, mode, uid, gid)
}

func writeAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Chmod(mode)
	}
	if werr == nil {
		werr = tmp.Chown(uid, gid)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	return nil
}

// InstallBinary copies the executable src to dst (0755, root-owned)
// unless dst already has the same content, replacing it atomically so a
// running daemon keeps its old copy. It reports whether it copied.
func InstallBinary(src, dst string) (bool, error) {
	if same, _ := sameFile(src, dst); same {
		return false, nil
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false, fmt.Errorf("creating %s: %w", filepath.Dir(dst), err)
	}
	if err := writeAtomic(dst, data, 0o755, 0, 0); err != nil {
		return false, fmt.Errorf("installing the binary: %w", err)
	}
	return true, nil
}

func sameFile(a, b string) (bool, error) {
	ra, err := filepath.EvalSymlinks(a)
	if err != nil {
		return false, err
	}
	rb, err := filepath.EvalSymlinks(b)
	if err != nil {
		return false, err
	}
	if ra == rb {
		return true, nil
	}
	ha, err := fileSum(ra)
	if err != nil {
		return false, err
	}
	hb, err := fileSum(rb)
	if err != nil {
		return false, err
	}
	return ha == hb, nil
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// PodmanUserConfig writes the service user's Podman configuration unless
// the files exist: overlay storage (Podman otherwise falls back to the slow
// vfs driver), and — since a system service has no systemd user session —
// file-based logs and events and the cgroupfs manager. Podman 4.5+ reads
// these under the configuration Outpost generates for its podman service;
// older Podman only reads the generated one.
func PodmanUserConfig(acct Account) error {
	dir := filepath.Join(acct.Home, ".config", "containers")
	for _, d := range []string{filepath.Join(acct.Home, ".config"), dir} {
		if err := MkdirOwned(d, 0o700, acct.UID, acct.GID); err != nil {
			return err
		}
	}
	files := map[string]string{
		"storage.conf": "# Written by outpost install.\n[storage]\ndriver = \"overlay\"\n",
		"containers.conf": "# Written by outpost install: a system service has no systemd user session.\n" +
			"[containers]\nlog_driver = \"k8s-file\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := writeAtomic(p, []byte(content), 0o644, acct.UID, acct.GID); err != nil {
			return err
		}
	}
	return nil
}

// NetnsDir is created by EnsureNetnsDir.
const NetnsDir = "/var/lib/cni"

// EnsureNetnsDir creates /var/lib/cni when it is missing. Podman 4's
// rootless network namespace bind-mounts an empty directory over the first
// of /var/lib/cni, /var/lib, /var that exists; without /var/lib/cni that
// hides /var/lib — and with it a service user's storage below
// /var/lib/outpost — so every user-defined network is "not found" when a
// container starts (measured with Podman 4.3.1 and netavark).
func EnsureNetnsDir() (bool, error) {
	if _, err := os.Stat(NetnsDir); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return false, fmt.Errorf("creating %s (rootless Podman networks need it): %w", NetnsDir, err)
	}
	return true, nil
}

// RunAs runs binary with args as acct, in dir, with env (plus HOME, USER,
// LOGNAME and a system PATH), feeding stdin and copying its output. install
// and uninstall use it for steps that need the user's rootless Podman.
func RunAs(ctx context.Context, acct Account, env []string, dir string, stdin io.Reader, stdout, stderr io.Writer, binary string, args ...string) error {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{
		"HOME=" + acct.Home, "USER=" + acct.Name, "LOGNAME=" + acct.Name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}, env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(acct.UID), Gid: uint32(acct.GID), Groups: []uint32{}}}
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running `outpost %s` as %s: %w", strings.Join(args, " "), acct.Name, err)
	}
	return nil
}

// KillUserProcesses sends SIGKILL to every process of uid (uninstall
// --purge does, so the user can be deleted) and waits up to 5s for them to
// go. It returns how many it signalled.
func KillUserProcesses(uid int) (int, error) {
	pids := userPIDs(uid)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(userPIDs(uid)) > 0 {
		if time.Now().After(deadline) {
			return len(pids), fmt.Errorf("processes of uid %d are still running after SIGKILL", uid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return len(pids), nil
}

func userPIDs(uid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				f := strings.Fields(rest)
				// Real, effective, saved, filesystem: any of them.
				for _, s := range f {
					if s == strconv.Itoa(uid) {
						pids = append(pids, pid)
						break
					}
				}
				break
			}
		}
	}
	return pids
}

// DeleteUser removes the service user, its group and its subordinate ID
// ranges (its home is removed by the caller, with the state).
func DeleteUser(ctx context.Context, name string) error {
	if _, err := user.Lookup(name); err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "userdel", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("deleting user %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		if err := RemoveSubIDs(f, name); err != nil {
			return err
		}
	}
	return nil
}
