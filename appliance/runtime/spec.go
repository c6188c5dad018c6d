package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/secrets"
)

// ContainerName is the Podman name of a service's container.
func ContainerName(app, service string) string { return app + "-" + service }

// JobContainerName is the Podman name of a job's container.
func JobContainerName(app, job string) string { return app + "-job-" + job }

// HostLimits are the host's hard resource limits that container ulimits
// must stay within (see ENVIRONMENT.md: Podman fails otherwise).
type HostLimits struct {
	NofileHard uint64
	NprocHard  uint64
}

// DetectHostLimits reads the hard limits of this process.
func DetectHostLimits() HostLimits {
	var h HostLimits
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil {
		h.NofileHard = r.Max
	}
	const rlimitNproc = 6 // RLIMIT_NPROC on Linux
	if syscall.Getrlimit(rlimitNproc, &r) == nil {
		h.NprocHard = r.Max
	}
	return h
}

// checkUlimits reports every requested ulimit above the host's hard limit.
func checkUlimits(svc *model.Service, h HostLimits) []string {
	var problems []string
	for _, name := range sortedKeys(svc.Ulimits) {
		u := svc.Ulimits[name]
		var hard uint64
		switch name {
		case "nofile":
			hard = h.NofileHard
		case "nproc":
			hard = h.NprocHard
		default:
			continue
		}
		if hard > 0 && (uint64(u.Hard) > hard || uint64(u.Soft) > hard) {
			problems = append(problems, fmt.Sprintf(
				"services.%s.ulimits.%s: %d exceeds this host's hard limit %d; lower it in the Compose file, or raise the limit for the user running outpost (LimitNOFILE=/LimitNPROC= in the service unit, or limits.conf)",
				svc.Name, name, max(u.Soft, u.Hard), hard))
		}
	}
	return problems
}

// ContainerSpec translates a service into the engine's container spec.
// Networks and volumes are resolved to their Podman names. extraEnv (secrets)
// is merged over the service's environment.
func ContainerSpec(app *model.Appliance, svc *model.Service, revision int64, extraEnv map[string]string) engine.ContainerSpec {
	env := make(map[string]string, len(svc.Environment)+len(extraEnv))
	for k, v := range svc.Environment {
		env[k] = v
	}
	for k, v := range extraEnv {
		env[k] = v
	}
	spec := engine.ContainerSpec{
		Name:          ContainerName(app.Name, svc.Name),
		Image:         svc.Image,
		Command:       svc.Command,
		Entrypoint:    svc.Entrypoint,
		EntrypointSet: svc.Entrypoint != nil,
		Env:           env,
		User:          svc.User,
		WorkingDir:    svc.WorkingDir,
		Hostname:      svc.Hostname,
		ExtraHosts:    svc.ExtraHosts,
		ShmSize:       svc.ShmSize,
		MemLimit:      svc.MemLimit,
		PidsLimit:     svc.PidsLimit,
		CapAdd:        svc.CapAdd,
		CapDrop:       svc.CapDrop,
		Init:          svc.Init,
		ReadOnly:      svc.ReadOnly,
		StopSignal:    svc.StopSignal,
		StopTimeout:   svc.StopGracePeriod,
		Networks:      map[string][]string{},
		Labels: map[string]string{
			engine.LabelAppliance: app.Name,
			engine.LabelService:   svc.Name,
			engine.LabelRevision:  fmt.Sprint(revision),
		},
	}
	for k, v := range svc.Labels {
		spec.Labels[k] = v
	}
	for _, m := range svc.Mounts {
		ms := engine.MountSpec{Type: string(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
		switch m.Type {
		case model.MountVolume:
			if v, ok := app.Volumes[m.Source]; ok {
				ms.Source = v.Name
			}
		case model.MountTmpfs:
			if m.TmpfsSize > 0 {
				ms.Options = append(ms.Options, fmt.Sprintf("size=%d", m.TmpfsSize))
			}
		}
		spec.Mounts = append(spec.Mounts, ms)
	}
	for _, p := range svc.Ports {
		spec.Ports = append(spec.Ports, engine.PortSpec{HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
	}
	nets := svc.Networks
	if len(nets) == 0 {
		nets = map[string][]string{"default": nil}
	}
	for key, aliases := range nets {
		name := key
		if n, ok := app.Networks[key]; ok {
			name = n.Name
		}
		all := append([]string{svc.Name}, aliases...)
		spec.Networks[name] = dedupe(all)
	}
	for _, name := range sortedKeys(svc.Ulimits) {
		u := svc.Ulimits[name]
		spec.Ulimits = append(spec.Ulimits, engine.UlimitSpec{Name: name, Soft: uint64(u.Soft), Hard: uint64(u.Hard)})
	}
	return spec
}

// ConfigHash fingerprints a container spec together with the image ID it
// runs, ignoring the labels that change with every revision. A running
// container whose hash label matches is kept as it is.
func ConfigHash(spec engine.ContainerSpec, imageID string) string {
	c := spec
	c.Labels = make(map[string]string, len(spec.Labels))
	for k, v := range spec.Labels {
		if k != engine.LabelRevision && k != engine.LabelConfigHash {
			c.Labels[k] = v
		}
	}
	b, _ := json.Marshal(struct {
		Spec    engine.ContainerSpec
		ImageID string
	}{c, imageID})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// SpecHash fingerprints a whole appliance definition and returns it as
// it is stored in a revision: with secrets.Marker in place of every secret
// value (secrets.Redact), so no value reaches the state database. A
// changed value leaves the fingerprint alone; it changes the config hash
// of the containers that use it, which recreates them.
func SpecHash(app *model.Appliance) (string, []byte, error) {
	b, err := json.Marshal(secrets.Redact(app))
	if err != nil {
		return "", nil, fmt.Errorf("encoding appliance definition: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), b, nil
}

// bindSourceProblems reports bind mounts whose host path is missing.
func bindSourceProblems(svc *model.Service) []string {
	var problems []string
	for _, m := range svc.Mounts {
		if m.Type != model.MountBind {
			continue
		}
		if _, err := os.Stat(m.Source); err != nil {
			problems = append(problems, fmt.Sprintf("services.%s.volumes: bind source %s: %v; create it or fix the path", svc.Name, m.Source, errUnwrapPath(err)))
		}
	}
	return problems
}

func errUnwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
