package compose

import (
	"fmt"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/schema"
	"github.com/compose-spec/compose-go/v2/tree"
)

// Outpost screens Compose attributes fail-closed: supportedTrees lists
// what it implements (or deliberately ignores because it cannot change
// behaviour); every other attribute of the Compose specification is reported,
// including ones the specification gains in later compose-go versions.
// How loudly is decided by unsupportedRules: an error when running without
// the attribute would be wrong, a warning when ignoring it is safe.
// docs/x-outpost.md carries the same table for vendors: keep them in step.

// supportedTrees are attribute paths that Outpost maps into the model or
// safely ignores, each with everything below it. Mappings that are only
// partly supported (services.*.volumes, services.*.deploy, volumes.*, ...)
// are not listed themselves: listing their supported leaves is enough for
// the screening to descend into them and report the rest.
var supportedTrees = []string{
	"name",
	"include", // resolved by compose-go before Outpost sees the model
	"services.*.image",
	"services.*.command",
	"services.*.entrypoint",
	"services.*.environment",
	"services.*.env_file",
	"services.*.user",
	"services.*.working_dir",
	"services.*.hostname",
	"services.*.volumes.[].type",
	"services.*.volumes.[].source",
	"services.*.volumes.[].target",
	"services.*.volumes.[].read_only",
	"services.*.volumes.[].consistency", // Docker Desktop only
	"services.*.volumes.[].bind.create_host_path",
	"services.*.volumes.[].tmpfs.size",
	"services.*.tmpfs",
	"services.*.ports",
	"services.*.networks.*.aliases",
	"services.*.extra_hosts",
	"services.*.shm_size",
	"services.*.ulimits",
	"services.*.mem_limit",
	"services.*.pids_limit",
	"services.*.cap_add",
	"services.*.cap_drop",
	"services.*.init",
	"services.*.read_only",
	"services.*.restart",
	"services.*.stop_signal",
	"services.*.stop_grace_period",
	"services.*.labels",
	"services.*.label_file",
	"services.*.healthcheck",
	"services.*.depends_on",
	"services.*.profiles",
	"services.*.extends", // resolved by compose-go
	"services.*.expose",  // documentation only: all ports are reachable on the network
	"services.*.attach",  // log attachment of `compose up`
	"services.*.develop", // `compose watch` only
	"services.*.deploy.mode",
	"services.*.deploy.resources.limits.memory",
	"services.*.deploy.resources.limits.pids",
	"services.*.deploy.restart_policy.condition",
	// value-dependent: checked by valuePatterns
	"services.*.network_mode",
	"services.*.ipc",
	"services.*.scale",
	"services.*.deploy.replicas",
	"services.*.pull_policy",
	"volumes.*.name",
	"volumes.*.external",
	"volumes.*.labels",
	"volumes.*.driver",
	"networks.*.name",
	"networks.*.external",
	"networks.*.internal",
	"networks.*.labels",
	"networks.*.driver",
}

// valuePatterns flag supported attributes only for some values.
var valuePatterns = []loader.UnsupportedAttributePattern{
	{Path: "services.*.network_mode", Detect: func(v any) bool { return !oneOf(v, "", "bridge", "default") }},
	{Path: "services.*.ipc", Detect: func(v any) bool { return !oneOf(v, "", "private", "shareable") }},
	{Path: "services.*.scale", Detect: func(v any) bool { n, ok := toInt(v); return !ok || n > 1 }},
	{Path: "services.*.deploy.replicas", Detect: func(v any) bool { n, ok := toInt(v); return !ok || n > 1 }},
	{Path: "services.*.pull_policy", Detect: func(v any) bool { return !oneOf(v, "", "missing", "if_not_present") }},
	{Path: "services.*.volumes.[].type", Detect: func(v any) bool { return !oneOf(v, "volume", "bind", "tmpfs") }},
	{Path: "volumes.*.driver", Detect: func(v any) bool { return !oneOf(v, "", "local") }},
	{Path: "networks.*.driver", Detect: func(v any) bool { return !oneOf(v, "", "bridge") }},
}

func oneOf(v any, values ...string) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}
	for _, x := range values {
		if s == x {
			return true
		}
	}
	return false
}

// supportedPaths expands supportedTrees over the specification's attribute
// inventory.
var supportedPaths = sync.OnceValue(func() []tree.Path {
	out := make([]tree.Path, 0, len(supportedTrees))
	for _, t := range supportedTrees {
		out = append(out, tree.Path(t))
	}
	for _, p := range schema.AttributePaths() {
		for _, t := range supportedTrees {
			if strings.HasPrefix(string(p), t+".") {
				out = append(out, p)
				break
			}
		}
	}
	return out
})

// severity of an unsupported attribute.
type severity int

const (
	sevWarning severity = iota
	sevError
)

// rule classifies unsupported attributes matching Path (tree.Path syntax:
// "*" any key, "[]" any list item).
type rule struct {
	Path    tree.Path
	Sev     severity
	Message string
}

// unsupportedRules: the first match wins. Attributes matching none are
// warnings with defaultUnsupported.
var unsupportedRules = []rule{
	// Running without these would be wrong.
	{"services.*.privileged", sevError, "privileged containers are not supported on rootless Podman; grant the specific capabilities with cap_add instead"},
	{"services.*.network_mode", sevError, "only the appliance network is supported (network_mode host, none, service: and container: are not); remove network_mode and publish ports with ports:"},
	{"services.*.net", sevError, "only the appliance network is supported; remove net"},
	{"services.*.pid", sevError, "sharing a PID namespace is not supported; remove pid"},
	{"services.*.ipc", sevError, "sharing an IPC namespace is not supported (private and shareable are); remove ipc"},
	{"services.*.devices", sevError, "device access is not supported; the service would run without the device"},
	{"services.*.device_cgroup_rules", sevError, "device access is not supported; the service would run without the device"},
	{"services.*.gpus", sevError, "GPU access is not supported; the service would run without the GPU"},
	{"services.*.deploy.resources.reservations.devices", sevError, "device reservations (GPUs) are not supported; the service would run without the device"},
	{"services.*.volumes_from", sevError, "volumes_from is not supported; mount the same named volumes explicitly with volumes:"},
	{"services.*.volumes.[].type", sevError, "only volume, bind and tmpfs mounts are supported"},
	{"services.*.volumes.[].volume.subpath", sevError, "volume subpath is not supported; the whole volume would be mounted"},
	{"services.*.volumes.[].image", sevError, "image mounts are not supported"},
	{"services.*.secrets", sevError, "Compose secrets are not supported; declare the value in x-outpost.secrets and list it in the service's x-outpost secrets, which injects it as an environment variable"},
	{"services.*.configs", sevError, "Compose configs are not supported; mount the file with a read-only bind volume instead"},
	{"services.*.use_api_socket", sevError, "exposing the container engine socket is not supported"},
	{"services.*.pre_start", sevError, "lifecycle hooks are not supported; use x-outpost.jobs or the image's entrypoint"},
	{"services.*.post_start", sevError, "lifecycle hooks are not supported; use x-outpost.jobs or the image's entrypoint"},
	{"services.*.pre_stop", sevError, "lifecycle hooks are not supported; handle the stop signal in the image instead"},
	{"services.*.provider", sevError, "provider services are not supported; Outpost only runs containers"},
	{"services.*.models", sevError, "model runner services are not supported"},
	{"volumes.*.driver", sevError, "only the local volume driver is supported; the data would land in a plain local volume"},
	{"volumes.*.driver_opts", sevError, "volume driver options are not supported (a bind of a host directory through driver_opts would be lost); use a bind mount in the service instead"},
	{"jobs", sevError, "Compose jobs are not supported; declare one-shot commands in x-outpost.jobs"},

	// Harmless to ignore.
	{"services.*.build", sevWarning, "build is ignored: Outpost runs the image named by image:; build it first or use `outpost bundle build`"},
	{"services.*.container_name", sevWarning, "containers are named <appliance>-<service>; the container name is kept as a network alias so other services still reach it by that name"},
	{"services.*.scale", sevWarning, "Outpost runs one container per service; scale is ignored"},
	{"services.*.deploy.replicas", sevWarning, "Outpost runs one container per service; replicas is ignored"},
	{"services.*.links", sevWarning, "links are not needed: services reach each other by service name on the appliance network; link aliases are not created"},
	{"services.*.external_links", sevWarning, "external_links are ignored"},
	{"services.*.logging", sevWarning, "Outpost collects container logs itself; the logging driver is ignored"},
	{"services.*.log_driver", sevWarning, "Outpost collects container logs itself; log_driver is ignored"},
	{"services.*.log_opt", sevWarning, "Outpost collects container logs itself; log_opt is ignored"},
	{"services.*.sysctls", sevWarning, "sysctls are ignored (rootless Podman cannot set most of them)"},
	{"services.*.security_opt", sevWarning, "security_opt is ignored; containers run with Podman's default rootless profile"},
	{"services.*.cgroup_parent", sevWarning, "cgroup_parent is ignored; Outpost places containers in its own cgroup"},
	{"services.*.cgroup", sevWarning, "cgroup is ignored"},
	{"services.*.userns_mode", sevWarning, "userns_mode is ignored; containers run in the service user's rootless user namespace"},
	{"services.*.pull_policy", sevWarning, "pull_policy is ignored; images come from the registry or a bundle when the appliance is installed or upgraded"},
	{"services.*.networks.*.ipv4_address", sevWarning, "static IP addresses are ignored; reach the service by name"},
	{"services.*.networks.*.ipv6_address", sevWarning, "static IP addresses are ignored; reach the service by name"},
	{"services.*.volumes.[].bind.selinux", sevWarning, "SELinux relabelling options are ignored"},
	{"services.*.volumes.[].bind.propagation", sevWarning, "bind propagation is ignored"},
	{"services.*.volumes.[].volume.nocopy", sevWarning, "nocopy is ignored: a new volume is populated from the image"},
	{"services.*.volumes.[].tmpfs.mode", sevWarning, "the tmpfs mode is ignored (tmpfs mounts are world-writable with the sticky bit)"},
	{"networks.*.driver", sevWarning, "every appliance network is a bridge network; the driver is ignored"},
	{"secrets", sevWarning, "Compose secrets are not supported; use x-outpost.secrets"},
	{"configs", sevWarning, "Compose configs are not supported; mount files with bind volumes"},
	{"models", sevWarning, "Compose models are not supported"},
}

const defaultUnsupported = "is not supported by Outpost and is ignored"

func classify(p tree.Path) rule {
	for _, r := range unsupportedRules {
		if p.Matches(r.Path) {
			return r
		}
	}
	return rule{Path: p, Sev: sevWarning, Message: fmt.Sprintf("%s %s", p.Last(), defaultUnsupported)}
}

// hasRule reports whether a rule names p itself.
func hasRule(p tree.Path) bool {
	for _, r := range unsupportedRules {
		if p.Matches(r.Path) {
			return true
		}
	}
	return false
}

// hasRuleBelow reports whether a rule names something inside p.
func hasRuleBelow(p tree.Path) bool {
	parts := p.Parts()
	for _, r := range unsupportedRules {
		rp := r.Path.Parts()
		if len(rp) > len(parts) && p.Matches(tree.NewPath(rp[:len(parts)]...)) {
			return true
		}
	}
	return false
}

// isZero reports values that cannot change behaviour (privileged: false,
// sysctls: {}), which are not worth a warning.
func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case int:
		return x == 0
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

// pathString renders a tree.Path for users.
func pathString(p tree.Path) string {
	return displayKey(p.String())
}
