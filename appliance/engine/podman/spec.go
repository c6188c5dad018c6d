package podman

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"
	"go.podman.io/image/v5/manifest"
	"golang.org/x/sys/unix"

	"github.com/outpostdev/outpost/appliance/engine"
)

// hostGatewayToken is the extra-host address Compose uses for "the host".
const hostGatewayToken = "host-gateway"

// specEnv is what mapping a ContainerSpec needs to know about the host.
type specEnv struct {
	// limitsSupported is false on rootless cgroups v1, where Podman cannot
	// apply memory or pids limits.
	limitsSupported bool
	// hardLimit returns the host's hard limit for an RLIMIT_* resource.
	hardLimit func(resource int) (uint64, error)
	// hostGateway returns the address that "host-gateway" becomes; it
	// returns "host-gateway" itself when the service resolves it.
	hostGateway func() (string, error)
}

// rlimits maps Compose ulimit names to Linux resource numbers.
var rlimits = map[string]int{
	"cpu":        unix.RLIMIT_CPU,
	"fsize":      unix.RLIMIT_FSIZE,
	"data":       unix.RLIMIT_DATA,
	"stack":      unix.RLIMIT_STACK,
	"core":       unix.RLIMIT_CORE,
	"rss":        unix.RLIMIT_RSS,
	"nproc":      unix.RLIMIT_NPROC,
	"nofile":     unix.RLIMIT_NOFILE,
	"memlock":    unix.RLIMIT_MEMLOCK,
	"as":         unix.RLIMIT_AS,
	"locks":      unix.RLIMIT_LOCKS,
	"sigpending": unix.RLIMIT_SIGPENDING,
	"msgqueue":   unix.RLIMIT_MSGQUEUE,
	"nice":       unix.RLIMIT_NICE,
	"rtprio":     unix.RLIMIT_RTPRIO,
	"rttime":     unix.RLIMIT_RTTIME,
}

// Default ulimits Outpost gives containers, clamped to the host's hard
// limits. They match Podman's own defaults where the host allows them.
const (
	maxDefaultNofile = 1048576
	maxDefaultNproc  = 4194304
)

// DefaultNofile is the nofile limit (soft = hard) Outpost gives containers
// when the host's hard limit is hard.
func DefaultNofile(hard uint64) uint64 { return clampLimit(hard, maxDefaultNofile) }

// DefaultNproc is the nproc limit (soft = hard) Outpost gives containers when
// the host's hard limit is hard. Rootless containers' processes count against
// the user's own nproc limit, so a low per-container default would only cause
// spurious fork failures: Outpost uses the host's hard limit, capped at
// Podman's default.
func DefaultNproc(hard uint64) uint64 { return clampLimit(hard, maxDefaultNproc) }

func clampLimit(hard, max uint64) uint64 {
	if hard == 0 || hard > max {
		return max
	}
	return hard
}

// buildSpec maps an engine.ContainerSpec to Podman's SpecGenerator. It
// returns warnings for settings it had to drop, and reports every invalid
// setting at once.
func buildSpec(s engine.ContainerSpec, env specEnv) (*specgen.SpecGenerator, []string, error) {
	var errs []error
	var warnings []string
	if s.Image == "" {
		errs = append(errs, errors.New("no image"))
	}

	g := specgen.NewSpecGenerator(s.Image, false)
	g.Name = s.Name
	g.Command = s.Command
	if s.EntrypointSet {
		if len(s.Entrypoint) == 0 {
			// Podman treats [""] as "no entrypoint"; an empty list would be
			// dropped by omitempty and fall back to the image's.
			g.Entrypoint = []string{""}
		} else {
			g.Entrypoint = s.Entrypoint
		}
	}
	if len(s.Env) > 0 {
		g.Env = s.Env
	}
	g.User = s.User
	g.WorkDir = s.WorkingDir
	g.Hostname = s.Hostname
	g.Labels = s.Labels
	g.CapAdd = s.CapAdd
	g.CapDrop = s.CapDrop
	// Outpost supervises restarts itself.
	g.RestartPolicy = "no"
	// Outpost runs health probes itself; Podman's need systemd timers.
	g.HealthConfig = &manifest.Schema2HealthConfig{Test: []string{"NONE"}}
	if s.Init {
		g.Init = boolPtr(true)
	}
	if s.ReadOnly {
		g.ReadOnlyFilesystem = boolPtr(true)
	}
	if s.ShmSize > 0 {
		g.ShmSize = &s.ShmSize
	}
	if s.StopSignal != "" {
		sig, err := parseSignal(s.StopSignal)
		if err != nil {
			errs = append(errs, err)
		} else {
			g.StopSignal = &sig
		}
	}
	if s.StopTimeout > 0 {
		secs := uint((s.StopTimeout + 999_999_999) / 1_000_000_000)
		g.StopTimeout = &secs
	}

	mountErrs := mapMounts(g, s.Mounts)
	errs = append(errs, mountErrs...)
	errs = append(errs, mapPorts(g, s.Ports)...)
	if len(s.Networks) > 0 {
		g.NetNS = specgen.Namespace{NSMode: specgen.Bridge}
		g.Networks = make(map[string]nettypes.PerNetworkOptions, len(s.Networks))
		for name, aliases := range s.Networks {
			g.Networks[name] = nettypes.PerNetworkOptions{Aliases: aliases}
		}
	}

	hosts, err := mapExtraHosts(s.ExtraHosts, env.hostGateway)
	if err != nil {
		errs = append(errs, err)
	}
	g.HostAdd = hosts

	rl, err := mapUlimits(s.Ulimits, env.hardLimit)
	if err != nil {
		errs = append(errs, err)
	}
	g.Rlimits = rl

	if s.MemLimit > 0 || s.PidsLimit > 0 {
		if env.limitsSupported {
			res := &spec.LinuxResources{}
			if s.MemLimit > 0 {
				res.Memory = &spec.LinuxMemory{Limit: &s.MemLimit}
			}
			if s.PidsLimit > 0 {
				res.Pids = &spec.LinuxPids{Limit: s.PidsLimit}
			}
			g.ResourceLimits = res
		} else {
			warnings = append(warnings, fmt.Sprintf(
				"memory limit %d and pids limit %d dropped: rootless Podman on cgroups v1 cannot apply resource limits (use a cgroups v2 host to enforce them)",
				s.MemLimit, s.PidsLimit))
		}
	}

	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return g, warnings, nil
}

func mapMounts(g *specgen.SpecGenerator, mounts []engine.MountSpec) []error {
	var errs []error
	for _, m := range mounts {
		if !path.IsAbs(m.Target) {
			errs = append(errs, fmt.Errorf("mount %q: target must be an absolute path", m.Target))
			continue
		}
		opts := append([]string(nil), m.Options...)
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		switch m.Type {
		case "volume":
			if m.Source == "" {
				errs = append(errs, fmt.Errorf("volume mount at %s: no volume name", m.Target))
				continue
			}
			g.Volumes = append(g.Volumes, &specgen.NamedVolume{Name: m.Source, Dest: m.Target, Options: opts})
		case "bind":
			if !path.IsAbs(m.Source) {
				errs = append(errs, fmt.Errorf("bind mount at %s: source %q must be an absolute path", m.Target, m.Source))
				continue
			}
			g.Mounts = append(g.Mounts, spec.Mount{Type: "bind", Source: m.Source, Destination: m.Target, Options: append([]string{"rbind"}, opts...)})
		case "tmpfs":
			g.Mounts = append(g.Mounts, spec.Mount{Type: "tmpfs", Source: "tmpfs", Destination: m.Target, Options: opts})
		default:
			errs = append(errs, fmt.Errorf("mount at %s: unknown type %q (want volume, bind or tmpfs)", m.Target, m.Type))
		}
	}
	return errs
}

// mapPorts publishes ports. A HostPort of 0 is not published: Outpost
// allocates host ports itself and never asks Podman to pick one.
func mapPorts(g *specgen.SpecGenerator, ports []engine.PortSpec) []error {
	var errs []error
	for _, p := range ports {
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if proto != "tcp" && proto != "udp" && proto != "sctp" {
			errs = append(errs, fmt.Errorf("port %d: unknown protocol %q", p.ContainerPort, p.Protocol))
			continue
		}
		if p.ContainerPort == 0 {
			errs = append(errs, errors.New("port mapping without a container port"))
			continue
		}
		if p.HostPort == 0 {
			continue
		}
		g.PortMappings = append(g.PortMappings, nettypes.PortMapping{
			HostIP:        p.HostIP,
			HostPort:      p.HostPort,
			ContainerPort: p.ContainerPort,
			Protocol:      proto,
			Range:         1,
		})
	}
	return errs
}

// mapExtraHosts checks "host:ip" entries and resolves "host-gateway".
func mapExtraHosts(hosts []string, gateway func() (string, error)) ([]string, error) {
	var out []string
	var errs []error
	var gw string
	for _, h := range hosts {
		name, addr, ok := strings.Cut(h, ":")
		if !ok || name == "" || addr == "" {
			errs = append(errs, fmt.Errorf("extra host %q: want host:ip", h))
			continue
		}
		if addr == hostGatewayToken {
			if gw == "" {
				var err error
				if gw, err = gateway(); err != nil {
					errs = append(errs, fmt.Errorf("extra host %q: resolving host-gateway: %w", h, err))
					continue
				}
			}
			addr = gw
		}
		out = append(out, name+":"+addr)
	}
	return out, errors.Join(errs...)
}

// mapUlimits maps ulimits to rlimits (Podman wants the short name, "nofile",
// and adds the RLIMIT_ prefix itself), rejecting any above the host's hard
// limit. When any is set it also sets nofile and nproc: Podman then stops
// applying containers.conf's defaults, and its built-in nproc can exceed
// the host's hard limit ("error setting rlimit type 6").
func mapUlimits(ulimits []engine.UlimitSpec, hardLimit func(int) (uint64, error)) ([]spec.POSIXRlimit, error) {
	if len(ulimits) == 0 {
		return nil, nil
	}
	var errs []error
	var out []spec.POSIXRlimit
	seen := map[string]bool{}
	for _, u := range ulimits {
		name := strings.TrimPrefix(strings.ToLower(u.Name), "rlimit_")
		res, ok := rlimits[name]
		if !ok {
			errs = append(errs, fmt.Errorf("ulimit %q: unknown name", u.Name))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("ulimit %s: set twice", name))
			continue
		}
		seen[name] = true
		if u.Soft > u.Hard {
			errs = append(errs, fmt.Errorf("ulimit %s: soft limit %d above hard limit %d", name, u.Soft, u.Hard))
			continue
		}
		hostHard, err := hardLimit(res)
		if err != nil {
			errs = append(errs, fmt.Errorf("ulimit %s: reading the host's limit: %w", name, err))
			continue
		}
		if u.Hard > hostHard {
			errs = append(errs, fmt.Errorf("ulimit %s: hard limit %d above the host's hard limit %d: lower it, or raise the limit of the user running outpost (limits.conf or LimitNOFILE/LimitNPROC in its unit)", name, u.Hard, hostHard))
			continue
		}
		out = append(out, spec.POSIXRlimit{Type: name, Soft: u.Soft, Hard: u.Hard})
	}
	for _, d := range []struct {
		name string
		def  func(uint64) uint64
	}{{"nofile", DefaultNofile}, {"nproc", DefaultNproc}} {
		if seen[d.name] {
			continue
		}
		hostHard, err := hardLimit(rlimits[d.name])
		if err != nil {
			errs = append(errs, fmt.Errorf("ulimit %s: reading the host's limit: %w", d.name, err))
			continue
		}
		v := d.def(hostHard)
		out = append(out, spec.POSIXRlimit{Type: d.name, Soft: v, Hard: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out, errors.Join(errs...)
}

// parseSignal accepts "SIGTERM", "TERM", "sigterm" or "15".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("stop signal %q: out of range", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("stop signal %q: unknown signal", s)
	}
	return sig, nil
}

// hardRlimit reads this process's hard limit for resource, as containers
// see it. The Podman service Outpost starts inherits these limits, and
// rootless containers cannot exceed them. For nproc it also applies
// kernel.pid_max: rootless Podman lowers its own nproc hard limit to it
// (measured with 4.3: 96365 became 32768), so containers asking for more
// fail with "error setting rlimit type 6".
func hardRlimit(resource int) (uint64, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(resource, &rl); err != nil {
		return 0, err
	}
	if resource == unix.RLIMIT_NPROC {
		return clampPidMax(rl.Max, "/proc/sys/kernel/pid_max"), nil
	}
	return rl.Max, nil
}

// clampPidMax returns min(limit, pid_max read from path); limit when the
// file cannot be read.
func clampPidMax(limit uint64, path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return limit
	}
	pidMax, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || pidMax == 0 || pidMax >= limit {
		return limit
	}
	return pidMax
}

func boolPtr(b bool) *bool { return &b }
