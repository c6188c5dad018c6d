package podman

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestContainersConfGolden(t *testing.T) {
	tests := []struct {
		name  string
		facts HostFacts
	}{
		// This project's VM: hybrid cgroups, runc only, no systemd, low limits
		// (nproc already capped at pid_max).
		{"v1-hybrid-runc-nosystemd", HostFacts{RuncAvailable: true, NofileHard: 20000, NprocHard: 32768}},
		// Same host with Podman < 4.5: the file replaces the system ones.
		{"v1-hybrid-standalone", HostFacts{RuncAvailable: true, NofileHard: 20000, NprocHard: 32768, Standalone: true}},
		// crun installed but the host is hybrid: crun refuses, so runc.
		{"v1-hybrid-crun-only", HostFacts{CrunAvailable: true, Systemd: true, NofileHard: 524288, NprocHard: 62000}},
		// A modern distribution: unified v2, crun, systemd, unlimited.
		{"v2-crun-systemd", HostFacts{CgroupsV2Unified: true, CrunAvailable: true, RuncAvailable: true, Systemd: true, NofileHard: ^uint64(0), NprocHard: ^uint64(0)}},
		// Unified v2 without crun.
		{"v2-runc-only", HostFacts{CgroupsV2Unified: true, RuncAvailable: true, Systemd: true, NofileHard: 1048576, NprocHard: 8000000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ContainersConf(tt.facts)
			golden := filepath.Join("testdata", "containers-conf", tt.name+".conf")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("ContainersConf mismatch for %s\n--- got\n%s\n--- want\n%s", tt.name, got, want)
			}
		})
	}
}

func TestContainersConfRules(t *testing.T) {
	tests := []struct {
		name       string
		facts      HostFacts
		contains   []string
		notContain []string
	}{
		{"crun only on unified v2", HostFacts{CgroupsV2Unified: true, CrunAvailable: true, RuncAvailable: true, Systemd: true},
			[]string{`runtime = "crun"`}, []string{"cgroup_manager", "events_logger", "log_driver"}},
		{"hybrid picks runc", HostFacts{CrunAvailable: true, RuncAvailable: true, Systemd: true},
			[]string{`runtime = "runc"`}, nil},
		{"no systemd", HostFacts{RuncAvailable: true},
			[]string{`cgroup_manager = "cgroupfs"`, `events_logger = "file"`, `log_driver = "k8s-file"`}, nil},
		{"limits clamp to hard", HostFacts{NofileHard: 20000, NprocHard: 96365},
			[]string{`"nofile=20000:20000"`, `"nproc=96365:96365"`}, nil},
		{"limits cap at defaults", HostFacts{NofileHard: ^uint64(0), NprocHard: 1 << 40},
			[]string{`"nofile=1048576:1048576"`, `"nproc=4194304:4194304"`}, nil},
		{"standalone repeats distro defaults", HostFacts{Standalone: true},
			[]string{"default_capabilities", `"SYS_CHROOT"`, "ping_group_range"}, nil},
		{"override keeps user's capabilities", HostFacts{},
			nil, []string{"default_capabilities", "default_sysctls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ContainersConf(tt.facts)
			for _, c := range tt.contains {
				if !strings.Contains(got, c) {
					t.Errorf("missing %s in\n%s", c, got)
				}
			}
			for _, c := range tt.notContain {
				if strings.Contains(got, c) {
					t.Errorf("unexpected %s in\n%s", c, got)
				}
			}
		})
	}
}

func TestDetectHostFakeRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc/sys/kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc/sys/kernel/pid_max"), []byte("32768\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sys/fs/cgroup/cgroup.controllers", "usr/sbin/runc"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	noPath := func(string) (string, error) { return "", errors.New("not found") }
	hard := func(r int) (uint64, error) {
		if r == unix.RLIMIT_NOFILE {
			return 20000, nil
		}
		return 96365, nil
	}
	h, err := detectHost(root, noPath, hard)
	if err != nil {
		t.Fatal(err)
	}
	// nproc is capped at pid_max, as rootless Podman caps its own.
	want := HostFacts{CgroupsV2Unified: true, RuncAvailable: true, NofileHard: 20000, NprocHard: 32768}
	if h != want {
		t.Errorf("detectHost = %+v, want %+v", h, want)
	}
	if h.Runtime() != "runc" {
		t.Errorf("Runtime = %s, want runc (no crun)", h.Runtime())
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]semver{
		"podman version 4.3.1\n":   {4, 3, 1},
		"podman version 5.0.0-dev": {5, 0, 0},
		"podman version 4.5":       {4, 5, 0},
	} {
		got, err := parseVersion(in)
		if err != nil || got != want {
			t.Errorf("parseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseVersion("podman"); err == nil {
		t.Error("parseVersion without a version: want error")
	}
	if (semver{4, 3, 1}).atLeast(4, 5) || !(semver{4, 5, 0}).atLeast(4, 5) || !(semver{5, 0, 0}).atLeast(4, 5) {
		t.Error("atLeast is wrong")
	}
}
