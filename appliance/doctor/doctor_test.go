package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// host builds a fake filesystem root for Run.
type host struct {
	t    *testing.T
	root string
	home string
	user User
	env  map[string]string
	// commands maps "name arg..." (name without directory) to output; a
	// missing entry fails.
	commands map[string]string
	ran      []string
	limits   map[int]uint64
}

func newHost(t *testing.T) *host {
	uid := os.Getuid()
	if uid == 0 {
		uid = 1000 // check as an ordinary user even when tests run as root
	}
	h := &host{
		t:        t,
		root:     t.TempDir(),
		home:     t.TempDir(),
		user:     User{UID: uid, GIDs: []int{uid}, Name: "appuser"},
		env:      map[string]string{},
		commands: map[string]string{},
		limits:   map[int]uint64{syscall.RLIMIT_NOFILE: 1048576, rlimitNproc: 1 << 20},
	}
	return h
}

func (h *host) file(p, content string, mode os.FileMode) string {
	h.t.Helper()
	full := filepath.Join(h.root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
	// Chmod after writing: WriteFile's mode is filtered by the umask and
	// ignores setuid.
	if err := os.Chmod(full, mode); err != nil {
		h.t.Fatal(err)
	}
	return full
}

// own gives path to the fake user (possible only when tests run as root;
// otherwise the user is the current one already).
func (h *host) own(path string) {
	h.t.Helper()
	if os.Getuid() == 0 {
		if err := os.Chown(path, h.user.UID, h.user.UID); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *host) bin(name string, mode os.FileMode) { h.file("/usr/bin/"+name, "#!/bin/sh\n", mode) }

// healthy lays out a host where every check passes.
func (h *host) healthy() *host {
	h.bin("podman", 0o755)
	h.commands["podman --version"] = "podman version 4.3.1\n"
	h.commands["aardvark-dns --version"] = "aardvark-dns 1.11.0\n"
	h.file("/etc/subuid", "other:100000:65536\nappuser:165536:65536\n", 0o644)
	h.file("/etc/subgid", "appuser:165536:65536\n", 0o644)
	h.bin("newuidmap", os.ModeSetuid|0o755)
	h.bin("newgidmap", os.ModeSetuid|0o755)
	h.file("/dev/net/tun", "", 0o666)
	h.bin("slirp4netns", 0o755)
	h.file("/usr/lib/podman/netavark", "#!/bin/sh\n", 0o755)
	h.file("/usr/lib/podman/aardvark-dns", "#!/bin/sh\n", 0o755)
	h.file("/usr/libexec/podman/catatonit", "#!/bin/sh\n", 0o755)
	h.bin("crun", 0o755)
	h.bin("runc", 0o755)
	h.bin("fuse-overlayfs", 0o755)
	h.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory pids\n", 0o444)
	h.file("/proc/sys/kernel/pid_max", "4194304\n", 0o444)
	h.file("/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n", 0o444)
	conf := filepath.Join(h.home, ".config", "containers", "storage.conf")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("[storage]\ndriver = \"overlay\"\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	xdg := filepath.Join(h.root, "run/user/1000")
	if err := os.MkdirAll(xdg, 0o700); err != nil {
		h.t.Fatal(err)
	}
	h.own(xdg)
	h.env["XDG_RUNTIME_DIR"] = "/run/user/1000"
	return h
}

func (h *host) run() Report {
	return Run(context.Background(), Options{
		Root: h.root,
		Home: h.home,
		User: &h.user,
		Getenv: func(k string) string {
			return h.env[k]
		},
		Run: func(_ context.Context, name string, args ...string) ([]byte, error) {
			key := strings.Join(append([]string{filepath.Base(name)}, args...), " ")
			h.ran = append(h.ran, key)
			out, ok := h.commands[key]
			if !ok {
				return nil, errors.New("unexpected command " + key)
			}
			return []byte(out), nil
		},
		HardLimit: func(r int) (uint64, error) { return h.limits[r], nil },
	})
}

func byName(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check named %q in %+v", name, r.Checks)
	return Check{}
}

// expect checks statuses and that each detail contains a fragment.
func expect(t *testing.T, r Report, want map[string]Status, details map[string]string) {
	t.Helper()
	for name, st := range want {
		c := byName(t, r, name)
		if c.Status != st {
			t.Errorf("%s = %s (%s), want %s", name, c.Status, c.Detail, st)
		}
	}
	for name, frag := range details {
		if c := byName(t, r, name); !strings.Contains(c.Detail+" | "+c.Fix, frag) {
			t.Errorf("%s: %q | %q lacks %q", name, c.Detail, c.Fix, frag)
		}
	}
	for _, c := range r.Checks {
		if c.Status != StatusPass && c.Fix == "" && c.Name != "podman" {
			t.Errorf("%s is %s without a fix: %s", c.Name, c.Status, c.Detail)
		}
	}
}

func TestHealthyHost(t *testing.T) {
	h := newHost(t).healthy()
	r := h.run()
	for _, c := range r.Checks {
		if c.Status != StatusPass {
			t.Errorf("%s = %s: %s (fix: %s)", c.Name, c.Status, c.Detail, c.Fix)
		}
	}
	if !r.OK() {
		t.Error("OK() = false on a healthy host")
	}
	if len(r.Checks) != 15 {
		t.Errorf("%d checks, want 15", len(r.Checks))
	}
	expect(t, r, nil, map[string]string{
		"podman":         "version 4.3.1",
		"subuid":         "65536 ids for appuser",
		"cgroups":        "crun",
		"ulimits":        "nofile=1048576:1048576 nproc=1048576:1048576",
		"storage driver": "overlay (from " + h.home,
		"overlay":        "natively",
	})
	for _, cmd := range h.ran {
		if strings.HasPrefix(cmd, "podman info") {
			t.Errorf("ran %q although storage.conf names the driver", cmd)
		}
	}
}

func TestBrokenHost(t *testing.T) {
	h := newHost(t)
	h.file("/etc/subgid", "appuser:100000:1000\n", 0o644)
	h.bin("newuidmap", 0o755) // lost its setuid bit
	h.file("/dev/net/tun", "", 0o000)
	h.bin("crun", 0o755) // hybrid cgroups: crun refuses
	h.file("/proc/sys/kernel/pid_max", "32768\n", 0o444)
	h.file("/proc/sys/kernel/osrelease", "5.10.0-28-amd64\n", 0o444)
	h.file("/etc/containers/storage.conf", "[storage]\ndriver = \"vfs\"\n", 0o644)
	h.limits[syscall.RLIMIT_NOFILE] = 20000
	h.limits[rlimitNproc] = 96365

	r := h.run()
	if r.OK() {
		t.Error("OK() = true on a broken host")
	}
	expect(t, r, map[string]Status{
		"podman":          StatusFail,
		"rootless user":   StatusPass,
		"subuid":          StatusFail,
		"subgid":          StatusWarn,
		"newuidmap":       StatusFail,
		"newgidmap":       StatusFail,
		"/dev/net/tun":    StatusFail,
		"slirp4netns":     StatusFail,
		"container DNS":   StatusFail,
		"container init":  StatusWarn,
		"cgroups":         StatusFail,
		"ulimits":         StatusWarn,
		"storage driver":  StatusWarn,
		"XDG_RUNTIME_DIR": StatusFail,
		"overlay":         StatusFail,
	}, map[string]string{
		"podman":         "apt-get install podman",
		"subuid":         "usermod --add-subuids 100000-165535 appuser",
		"subgid":         "1000 ids",
		"newuidmap":      "chmod u+s /usr/bin/newuidmap",
		"/dev/net/tun":   "chmod 0666 /dev/net/tun",
		"cgroups":        "apt-get install runc",
		"container DNS":  "apt-get install netavark aardvark-dns",
		"container init": "apt-get install catatonit",
		"ulimits":        "nproc 32768 (kernel.pid_max); containers get nofile=20000:20000 nproc=32768:32768",
		"storage driver": `driver = "overlay"`,
		"overlay":        "apt-get install fuse-overlayfs",
	})
}

func TestPodmanVersions(t *testing.T) {
	tests := []struct {
		out    string
		status Status
		detail string
	}{
		{"podman version 4.2.0\n", StatusFail, "older than 4.3.0"},
		{"podman version 4.3.1\n", StatusPass, "4.3.1"},
		{"podman version 5.2.2\n", StatusPass, "5.2.2"},
		{"nonsense\n", StatusWarn, "cannot read a version"},
	}
	for _, tt := range tests {
		h := newHost(t).healthy()
		h.commands["podman --version"] = tt.out
		c := byName(t, h.run(), "podman")
		if c.Status != tt.status || !strings.Contains(c.Detail, tt.detail) {
			t.Errorf("%q: %s %q, want %s containing %q", tt.out, c.Status, c.Detail, tt.status, tt.detail)
		}
	}
}

func TestPastaWithPodman5(t *testing.T) {
	h := newHost(t).healthy()
	os.Remove(filepath.Join(h.root, "usr/bin/slirp4netns"))
	h.bin("pasta", 0o755)
	h.commands["podman --version"] = "podman version 5.0.2\n"
	expect(t, h.run(), map[string]Status{"slirp4netns": StatusPass}, map[string]string{"slirp4netns": "pasta"})

	h.commands["podman --version"] = "podman version 4.9.3\n"
	expect(t, h.run(), map[string]Status{"slirp4netns": StatusFail}, nil)
}

func TestCgroupsV1WithRunc(t *testing.T) {
	h := newHost(t).healthy()
	os.Remove(filepath.Join(h.root, "sys/fs/cgroup/cgroup.controllers"))
	expect(t, h.run(), map[string]Status{"cgroups": StatusWarn}, map[string]string{"cgroups": "will use runc"})
}

func TestRoot(t *testing.T) {
	h := newHost(t).healthy()
	h.user = User{UID: 0, GIDs: []int{0}, Name: "root"}
	delete(h.env, "XDG_RUNTIME_DIR")
	r := h.run()
	expect(t, r, map[string]Status{
		"rootless user":   StatusWarn,
		"subuid":          StatusPass,
		"XDG_RUNTIME_DIR": StatusPass,
	}, map[string]string{"rootless user": "rootless is the supported mode"})
	if !r.OK() {
		t.Error("root is a warning, not a failure")
	}
}

func TestStorageDriverSources(t *testing.T) {
	// No configuration and no storage yet: do not run `podman info`, which
	// would create the storage with whatever driver Podman picks.
	h := newHost(t).healthy()
	os.RemoveAll(filepath.Join(h.home, ".config"))
	expect(t, h.run(), map[string]Status{"storage driver": StatusWarn}, map[string]string{"storage driver": "no storage driver configured"})
	for _, cmd := range h.ran {
		if strings.HasPrefix(cmd, "podman info") {
			t.Errorf("ran %q before storage exists", cmd)
		}
	}

	// Storage exists: ask Podman.
	if err := os.MkdirAll(filepath.Join(h.home, ".local/share/containers/storage"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.commands["podman info --format {{.Store.GraphDriverName}}"] = "vfs\n"
	expect(t, h.run(), map[string]Status{"storage driver": StatusWarn}, map[string]string{"storage driver": "vfs (from podman info)"})

	// XDG_CONFIG_HOME wins over ~/.config; other tables are ignored.
	cfg := t.TempDir()
	h.env["XDG_CONFIG_HOME"] = cfg
	os.MkdirAll(filepath.Join(cfg, "containers"), 0o755)
	os.WriteFile(filepath.Join(cfg, "containers", "storage.conf"), []byte("[other]\ndriver = \"vfs\"\n[storage]\n  driver = 'overlay'\n"), 0o644)
	expect(t, h.run(), map[string]Status{"storage driver": StatusPass}, map[string]string{"storage driver": "overlay (from " + cfg})
}

func TestRuntimeDirProblems(t *testing.T) {
	h := newHost(t).healthy()
	h.env["XDG_RUNTIME_DIR"] = "/run/user/4242"
	expect(t, h.run(), map[string]Status{"XDG_RUNTIME_DIR": StatusFail}, map[string]string{"XDG_RUNTIME_DIR": "does not exist"})
	if os.Getuid() == 0 {
		// A directory of someone else.
		other := filepath.Join(h.root, "run/user/4242")
		os.MkdirAll(other, 0o700)
		os.Chown(other, 4242, 4242)
		expect(t, h.run(), map[string]Status{"XDG_RUNTIME_DIR": StatusFail}, map[string]string{"XDG_RUNTIME_DIR": "belongs to uid 4242"})
	}
}

func TestTunPermissions(t *testing.T) {
	h := newHost(t).healthy()
	tun := filepath.Join(h.root, "dev/net/tun")
	os.Chmod(tun, 0o600)
	h.own(tun)
	// The owner may open a 0600 device.
	expect(t, h.run(), map[string]Status{"/dev/net/tun": StatusPass}, nil)
	h.user.UID++ // someone else may not
	expect(t, h.run(), map[string]Status{"/dev/net/tun": StatusFail}, map[string]string{"/dev/net/tun": "Permission denied"})
}

func TestReportJSON(t *testing.T) {
	r := Report{Checks: []Check{{Name: "x", Status: StatusWarn, Detail: "d", Fix: "f"}, {Name: "y", Status: StatusPass, Detail: "ok"}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"checks":[{"name":"x","status":"WARN","detail":"d","fix":"f"},{"name":"y","status":"PASS","detail":"ok"}]}`
	if string(b) != want {
		t.Errorf("JSON = %s, want %s", b, want)
	}
	if !r.OK() {
		t.Error("warnings only: OK() = false")
	}
	r.Checks = append(r.Checks, Check{Name: "z", Status: StatusFail})
	if r.OK() {
		t.Error("with a failure: OK() = true")
	}
}

// TestNameResolution covers the network backends: netavark with
// aardvark-dns, a user whose Podman recorded CNI, and CNI with dnsname.
func TestNameResolution(t *testing.T) {
	backend := func(h *host, v string) {
		p := filepath.Join(h.home, ".local/share/containers/storage/defaultNetworkBackend")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := newHost(t).healthy()
	backend(h, "netavark")
	expect(t, h.run(), map[string]Status{"container DNS": StatusPass}, map[string]string{"container DNS": "aardvark-dns"})

	h = newHost(t).healthy()
	backend(h, "cni")
	expect(t, h.run(), map[string]Status{"container DNS": StatusFail}, map[string]string{"container DNS": "echo netavark > ~/.local/share/containers/storage/defaultNetworkBackend"})

	h.file("/usr/lib/cni/dnsname", "#!/bin/sh\n", 0o755)
	expect(t, h.run(), map[string]Status{"container DNS": StatusPass}, map[string]string{"container DNS": "dnsname"})

	h = newHost(t).healthy()
	if err := os.Remove(filepath.Join(h.root, "/usr/lib/podman/aardvark-dns")); err != nil {
		t.Fatal(err)
	}
	expect(t, h.run(), map[string]Status{"container DNS": StatusFail}, map[string]string{"container DNS": "without aardvark-dns"})

	// Debian 12's aardvark-dns resolves, but drops lookups while it
	// reloads: a warning that says what services must do.
	h = newHost(t).healthy()
	h.commands["aardvark-dns --version"] = "aardvark-dns 1.4.0\n"
	expect(t, h.run(), map[string]Status{"container DNS": StatusWarn}, map[string]string{"container DNS": "retry a lookup that fails temporarily"})
	if c := byName(t, h.run(), "container DNS"); !strings.Contains(c.Detail, "aardvark-dns 1.4.0") {
		t.Errorf("detail does not name the version: %s", c.Detail)
	}
	// A version it cannot run or read is not held against the host.
	h.commands["aardvark-dns --version"] = "garbage\n"
	expect(t, h.run(), map[string]Status{"container DNS": StatusPass}, nil)
}
