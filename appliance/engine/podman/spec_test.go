package podman

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"
	"golang.org/x/sys/unix"

	"github.com/outpostdev/outpost/appliance/engine"
)

func testEnv() specEnv {
	return specEnv{
		limitsSupported: true,
		hardLimit: func(r int) (uint64, error) {
			switch r {
			case unix.RLIMIT_NOFILE:
				return 20000, nil
			case unix.RLIMIT_NPROC:
				return 96365, nil
			}
			return ^uint64(0), nil
		},
		hostGateway: func() (string, error) { return "192.0.2.10", nil },
	}
}

func TestBuildSpecFull(t *testing.T) {
	s := engine.ContainerSpec{
		Name:          "app-web",
		Image:         "localhost/web:1",
		Command:       []string{"httpd", "-f"},
		Entrypoint:    []string{"/init"},
		EntrypointSet: true,
		Env:           map[string]string{"A": "1"},
		User:          "1000:1000",
		WorkingDir:    "/srv",
		Hostname:      "web",
		Mounts: []engine.MountSpec{
			{Type: "volume", Source: "app_data", Target: "/data", ReadOnly: true},
			{Type: "bind", Source: "/etc/app", Target: "/config", ReadOnly: true},
			{Type: "tmpfs", Target: "/tmp", Options: []string{"size=64m"}},
		},
		Ports: []engine.PortSpec{
			{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80},
			{HostPort: 0, ContainerPort: 81},
			{HostPort: 5353, ContainerPort: 53, Protocol: "UDP"},
		},
		Networks:    map[string][]string{"app_default": {"web", "www"}},
		ExtraHosts:  []string{"host.docker.internal:host-gateway", "db:10.0.0.5"},
		ShmSize:     64 << 20,
		Ulimits:     []engine.UlimitSpec{{Name: "nofile", Soft: 1024, Hard: 4096}},
		MemLimit:    256 << 20,
		PidsLimit:   100,
		CapAdd:      []string{"NET_ADMIN"},
		CapDrop:     []string{"ALL"},
		Init:        true,
		ReadOnly:    true,
		StopSignal:  "SIGQUIT",
		StopTimeout: 1500 * time.Millisecond,
		Labels:      map[string]string{engine.LabelAppliance: "app"},
	}
	g, warnings, err := buildSpec(s, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %v", warnings)
	}
	check := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", what, got, want)
		}
	}
	check("Name", g.Name, "app-web")
	check("Image", g.Image, "localhost/web:1")
	check("Command", g.Command, []string{"httpd", "-f"})
	check("Entrypoint", g.Entrypoint, []string{"/init"})
	check("Env", g.Env, map[string]string{"A": "1"})
	check("User", g.User, "1000:1000")
	check("WorkDir", g.WorkDir, "/srv")
	check("Hostname", g.Hostname, "web")
	check("Volumes", g.Volumes, []*specgen.NamedVolume{{Name: "app_data", Dest: "/data", Options: []string{"ro"}}})
	check("Mounts", g.Mounts, []spec.Mount{
		{Type: "bind", Source: "/etc/app", Destination: "/config", Options: []string{"rbind", "ro"}},
		{Type: "tmpfs", Source: "tmpfs", Destination: "/tmp", Options: []string{"size=64m"}},
	})
	check("PortMappings", g.PortMappings, []nettypes.PortMapping{
		{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Protocol: "tcp", Range: 1},
		{HostPort: 5353, ContainerPort: 53, Protocol: "udp", Range: 1},
	})
	check("NetNS", g.NetNS.NSMode, specgen.Bridge)
	check("Networks", g.Networks, map[string]nettypes.PerNetworkOptions{"app_default": {Aliases: []string{"web", "www"}}})
	check("HostAdd", g.HostAdd, []string{"host.docker.internal:192.0.2.10", "db:10.0.0.5"})
	check("ShmSize", *g.ShmSize, int64(64<<20))
	check("Rlimits", g.Rlimits, []spec.POSIXRlimit{
		{Type: "nofile", Soft: 1024, Hard: 4096},
		{Type: "nproc", Soft: 96365, Hard: 96365},
	})
	check("Memory", *g.ResourceLimits.Memory.Limit, int64(256<<20))
	check("Pids", g.ResourceLimits.Pids.Limit, int64(100))
	check("CapAdd", g.CapAdd, []string{"NET_ADMIN"})
	check("CapDrop", g.CapDrop, []string{"ALL"})
	check("Init", *g.Init, true)
	check("ReadOnly", *g.ReadOnlyFilesystem, true)
	check("StopSignal", *g.StopSignal, syscall.SIGQUIT)
	check("StopTimeout", *g.StopTimeout, uint(2))
	check("Labels", g.Labels, map[string]string{engine.LabelAppliance: "app"})
	check("RestartPolicy", g.RestartPolicy, "no")
	check("HealthConfig", g.HealthConfig.Test, []string{"NONE"})
}

func TestBuildSpecEntrypoint(t *testing.T) {
	tests := []struct {
		name string
		s    engine.ContainerSpec
		want []string
	}{
		{"unset keeps image's", engine.ContainerSpec{Image: "i"}, nil},
		{"explicitly empty", engine.ContainerSpec{Image: "i", EntrypointSet: true}, []string{""}},
		{"explicit", engine.ContainerSpec{Image: "i", EntrypointSet: true, Entrypoint: []string{"sh", "-c"}}, []string{"sh", "-c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _, err := buildSpec(tt.s, testEnv())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g.Entrypoint, tt.want) {
				t.Errorf("Entrypoint = %#v, want %#v", g.Entrypoint, tt.want)
			}
		})
	}
}

func TestBuildSpecNoUlimitsLeavesDefaults(t *testing.T) {
	g, _, err := buildSpec(engine.ContainerSpec{Image: "i"}, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if g.Rlimits != nil {
		t.Errorf("Rlimits = %v, want none (containers.conf defaults apply)", g.Rlimits)
	}
	if g.NetNS.NSMode != "" || g.Networks != nil {
		t.Errorf("no networks asked, got netns %q networks %v", g.NetNS.NSMode, g.Networks)
	}
}

func TestBuildSpecLimitsDroppedOnRootlessV1(t *testing.T) {
	env := testEnv()
	env.limitsSupported = false
	g, warnings, err := buildSpec(engine.ContainerSpec{Image: "i", MemLimit: 1 << 30, PidsLimit: 50}, env)
	if err != nil {
		t.Fatal(err)
	}
	if g.ResourceLimits != nil {
		t.Errorf("ResourceLimits = %+v, want dropped", g.ResourceLimits)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "cgroups v1") {
		t.Errorf("warnings = %v, want one about cgroups v1", warnings)
	}
}

func TestBuildSpecReportsEveryError(t *testing.T) {
	s := engine.ContainerSpec{
		Mounts: []engine.MountSpec{
			{Type: "volume", Target: "relative"},
			{Type: "bind", Source: "rel", Target: "/x"},
			{Type: "nfs", Target: "/y"},
		},
		Ports:      []engine.PortSpec{{HostPort: 1, ContainerPort: 1, Protocol: "icmp"}},
		ExtraHosts: []string{"nocolon"},
		Ulimits: []engine.UlimitSpec{
			{Name: "nofile", Soft: 65536, Hard: 65536},
			{Name: "bogus", Soft: 1, Hard: 1},
			{Name: "core", Soft: 2, Hard: 1},
		},
		StopSignal: "SIGNOPE",
	}
	_, _, err := buildSpec(s, testEnv())
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{
		"no image", "relative", `source "rel"`, `unknown type "nfs"`, `protocol "icmp"`, `"nocolon"`,
		"above the host's hard limit 20000", `"bogus"`, "soft limit 2 above hard limit 1", `"SIGNOPE"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestBuildSpecHostGatewayFailure(t *testing.T) {
	env := testEnv()
	env.hostGateway = func() (string, error) { return "", errors.New("no address") }
	_, _, err := buildSpec(engine.ContainerSpec{Image: "i", ExtraHosts: []string{"h:host-gateway"}}, env)
	if err == nil || !strings.Contains(err.Error(), "host-gateway") {
		t.Errorf("err = %v, want host-gateway error", err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM, "QUIT": syscall.SIGQUIT, "9": syscall.SIGKILL,
	} {
		got, err := parseSignal(in)
		if err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "SIGFOO", "0", "99"} {
		if _, err := parseSignal(bad); err == nil {
			t.Errorf("parseSignal(%q): want error", bad)
		}
	}
}

func TestDefaultLimits(t *testing.T) {
	if DefaultNofile(20000) != 20000 || DefaultNofile(^uint64(0)) != 1048576 || DefaultNofile(0) != 1048576 {
		t.Error("DefaultNofile wrong")
	}
	if DefaultNproc(96365) != 96365 || DefaultNproc(^uint64(0)) != 4194304 {
		t.Error("DefaultNproc wrong")
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{limit: 8}
	fmt.Fprint(b, "hello ")
	fmt.Fprint(b, "world!")
	if got := b.String(); got != "o world!" {
		t.Errorf("tail = %q, want %q", got, "o world!")
	}
}

func TestAPIErrNotFound(t *testing.T) {
	err := apiErr("inspecting container x", &errorhandling.ErrorModel{Message: "no container with name or ID \"x\" found: no such container", ResponseCode: 404})
	if !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("404 not mapped to ErrNotFound: %v", err)
	}
	if !strings.Contains(err.Error(), "inspecting container x: no container") {
		t.Errorf("message lost: %v", err)
	}
	other := apiErr("starting", &errorhandling.ErrorModel{Message: "boom", ResponseCode: 500})
	if errors.Is(other, engine.ErrNotFound) {
		t.Error("500 mapped to ErrNotFound")
	}
}

type ctxKey string

func TestMergedCtx(t *testing.T) {
	conn := context.WithValue(context.Background(), ctxKey("client"), "conn")
	caller, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey("trace"), "caller"))
	m := (&Engine{conn: conn}).callCtx(caller)
	if m.Value(ctxKey("client")) != "conn" || m.Value(ctxKey("trace")) != "caller" {
		t.Error("values not merged")
	}
	cancel()
	select {
	case <-m.Done():
	default:
		t.Error("caller's cancel does not reach the merged context")
	}
}
