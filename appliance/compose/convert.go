package compose

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
	units "github.com/docker/go-units"

	"github.com/outpostdev/outpost/appliance/model"
)

// converter turns a loaded compose-go project into a model.Appliance,
// recording problems and warnings in rep as it goes.
type converter struct {
	project  *types.Project
	src      *sourceIndex
	rep      *report
	opts     Options
	baseDir  string // directory of the first file on disk; "" for none
	findings []loader.UnsupportedAttribute
	sources  []string

	x         *xOutpost
	xsvc      map[string]*xService // merged per-service x-outpost blocks
	name      string
	proxySvc  string
	replaced  *model.Service // the proxy service, converted (keepReplaced)
	buildOnly map[string]bool
	appliance *model.Appliance
}

func (c *converter) convert() *model.Appliance {
	c.decodeExtensions()
	c.settleName()
	a := &model.Appliance{
		Name:     c.name,
		Version:  c.x.Version,
		Services: map[string]*model.Service{},
		Sources:  c.sources,
		Profiles: c.profiles(),
	}
	c.appliance = a
	if c.x.Proxy != nil {
		c.proxySvc = c.x.Proxy.Service
	}
	c.volumes()
	c.networks()
	c.buildOnly = map[string]bool{}
	for _, name := range c.project.ServiceNames() {
		if name == c.proxySvc {
			c.keepReplaced(name)
			continue
		}
		if s := c.service(c.project.Services[name]); s != nil {
			a.Services[name] = s
		}
	}
	c.replaceProxyService()
	c.serviceExtensions()
	c.proxy()
	c.jobs()
	c.secrets()
	c.checks()
	c.backupPolicy()
	c.unsupported()
	c.crossChecks()
	c.validateModel()
	return a
}

// profiles returns the active profiles, deduplicated and sorted.
func (c *converter) profiles() []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range c.opts.Profiles {
		if p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// decodeExtensions decodes the top-level and per-service x-outpost blocks.
func (c *converter) decodeExtensions() {
	c.x = &xOutpost{}
	if raw, ok := c.project.Extensions[Extension]; ok {
		decodeStrict(raw, c.x, Extension, c.bad)
	}
	c.xsvc = map[string]*xService{}
	for _, name := range c.project.ServiceNames() {
		s := c.project.Services[name]
		var local *xService
		if raw, ok := s.Extensions[Extension]; ok {
			local = &xService{}
			decodeStrict(raw, local, "services."+name+"."+Extension, c.bad)
		}
		if merged := c.x.Services[name].merge(local); merged != nil {
			c.xsvc[name] = merged
		}
	}
}

func (c *converter) bad(key, msg string) { c.rep.errorf([]string{key}, "%s", msg) }

// settleName applies the name precedence and normalises the result.
func (c *converter) settleName() {
	raw, key := c.opts.ProjectName, ""
	switch {
	case raw != "":
	case c.x.Name != "":
		raw, key = c.x.Name, Extension+".name"
	case c.src.has("name"):
		raw, key = c.project.Name, "name"
	default:
		raw = c.project.Name // the directory name, already normalised
	}
	c.name = loader.NormalizeProjectName(raw)
	switch {
	case c.name == "":
		c.rep.errorf([]string{key, Extension + ".name"}, "%q leaves no usable appliance name; use lowercase letters, digits, '_' and '-'", raw)
	case c.name != raw && key != "":
		c.rep.warnf([]string{key}, "appliance name %q is used as %q (lowercase letters, digits, '_' and '-' only)", raw, c.name)
	case c.name != raw && c.opts.ProjectName != "":
		c.rep.warnings = append(c.rep.warnings, Warning{Message: fmt.Sprintf("appliance name %q is used as %q (lowercase letters, digits, '_' and '-' only)", raw, c.name)})
	}
}

// podmanName is the Podman name of a volume or network: explicit names and
// external resources keep theirs, everything else gets the appliance prefix.
func (c *converter) podmanName(kind, key, composeName string, external bool) string {
	if external || c.src.has(kind+"."+key+".name") {
		return composeName
	}
	return c.name + "_" + key
}

func (c *converter) volumes() {
	a := c.appliance
	a.Volumes = map[string]*model.Volume{}
	for _, key := range sortedKeys(c.project.Volumes) {
		v := c.project.Volumes[key]
		a.Volumes[key] = &model.Volume{
			Key:      key,
			Name:     c.podmanName("volumes", key, v.Name, bool(v.External)),
			External: bool(v.External),
			Labels:   nonEmptyMap(v.Labels),
		}
	}
	if c.x.Volumes == nil {
		return
	}
	for i, key := range c.x.Volumes.Legacy {
		k := fmt.Sprintf("%s.volumes.legacy.%d", Extension, i)
		if key == "" {
			c.rep.errorf([]string{k}, "legacy volume key is empty")
			continue
		}
		v, ok := a.Volumes[key]
		if !ok {
			// The old release declared it; this one need not. It still
			// exists on upgraded boxes and must be known to be kept.
			v = &model.Volume{Key: key, Name: c.name + "_" + key}
			a.Volumes[key] = v
		}
		if v.External {
			c.rep.errorf([]string{k}, "volume %q is external; Outpost does not manage it, so it cannot be legacy", key)
		}
		v.Legacy = true
	}
	for i, m := range c.x.Volumes.Migrations {
		k := fmt.Sprintf("%s.volumes.migrations.%d", Extension, i)
		if m.From == "" || m.To == "" {
			c.rep.errorf([]string{k}, "a migration needs both from and to")
			continue
		}
		a.VolumeMigrations = append(a.VolumeMigrations, model.VolumeMigration{From: m.From, To: m.To})
	}
}

func (c *converter) networks() {
	a := c.appliance
	a.Networks = map[string]*model.Network{}
	for _, key := range sortedKeys(c.project.Networks) {
		n := c.project.Networks[key]
		a.Networks[key] = &model.Network{
			Key:      key,
			Name:     c.podmanName("networks", key, n.Name, bool(n.External)),
			External: bool(n.External),
			Internal: n.Internal,
		}
	}
	if _, ok := a.Networks["default"]; !ok {
		a.Networks["default"] = &model.Network{Key: "default", Name: c.name + "_default"}
	}
}

// service converts one Compose service; it returns nil when the service
// cannot be represented (the problem is recorded).
func (c *converter) service(s types.ServiceConfig) *model.Service {
	key := "services." + s.Name
	if s.Image == "" {
		if s.Build != nil {
			c.buildOnly[s.Name] = true
			c.rep.errorf([]string{key + ".build", key}, "service %s has build: but no image: ; Outpost runs images, build them first or use `outpost bundle build`", s.Name)
		} else {
			c.rep.errorf([]string{key}, "service %s has no image:", s.Name)
		}
		return nil
	}
	out := &model.Service{
		Name:        s.Name,
		Image:       s.Image,
		Command:     cloneCommand(s.Command),
		Entrypoint:  cloneCommand(s.Entrypoint),
		Environment: environ(s.Environment),
		User:        s.User,
		WorkingDir:  s.WorkingDir,
		Hostname:    s.Hostname,
		ExtraHosts:  extraHosts(s.ExtraHosts),
		ShmSize:     int64(s.ShmSize),
		Ulimits:     ulimits(s.Ulimits),
		CapAdd:      cloneStrings(s.CapAdd),
		CapDrop:     cloneStrings(s.CapDrop),
		Init:        s.Init != nil && *s.Init,
		ReadOnly:    s.ReadOnly,
		StopSignal:  s.StopSignal,
		Labels:      nonEmptyMap(s.Labels),
		Role:        model.RoleStateful,
	}
	out.Mounts = c.mounts(s)
	out.Ports = c.ports(s)
	out.Networks = c.serviceNetworks(s)
	out.MemLimit, out.PidsLimit = c.limits(s)
	out.Restart = c.restart(s)
	out.Healthcheck = c.healthcheck(s)
	out.DependsOn = c.dependsOn(s)
	out.StopGracePeriod = model.DefaultStopGrace
	switch {
	case s.StopGracePeriod != nil:
		out.StopGracePeriod = time.Duration(*s.StopGracePeriod)
	case c.xsvc[s.Name] != nil && c.xsvc[s.Name].StopTimeout != nil:
		out.StopGracePeriod = *c.xsvc[s.Name].StopTimeout
	}
	return out
}

func (c *converter) mounts(s types.ServiceConfig) []model.Mount {
	key := "services." + s.Name
	var out []model.Mount
	for i, v := range s.Volumes {
		vkey := fmt.Sprintf("%s.volumes.%d", key, i)
		switch v.Type {
		case types.VolumeTypeVolume:
			if v.Source == "" {
				c.rep.errorf([]string{vkey}, "anonymous volume at %s: its data would be lost on every upgrade; declare a named volume under top-level volumes: and mount it by name", v.Target)
				continue
			}
			out = append(out, model.Mount{Type: model.MountVolume, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
		case types.VolumeTypeBind:
			out = append(out, model.Mount{Type: model.MountBind, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
		case types.VolumeTypeTmpfs:
			m := model.Mount{Type: model.MountTmpfs, Target: v.Target}
			if v.Tmpfs != nil {
				m.TmpfsSize = int64(v.Tmpfs.Size)
			}
			out = append(out, m)
		default:
			// reported by the unsupported-attribute screening
		}
	}
	for i, t := range s.Tmpfs {
		tkey := fmt.Sprintf("%s.tmpfs.%d", key, i)
		target, options, _ := strings.Cut(t, ":")
		m := model.Mount{Type: model.MountTmpfs, Target: target}
		for _, o := range strings.Split(options, ",") {
			k, val, _ := strings.Cut(o, "=")
			switch {
			case o == "", o == "rw", k == "mode" && (val == "1777" || val == "01777"):
			case k == "size":
				n, err := units.RAMInBytes(val)
				if err != nil || n < 0 {
					c.rep.errorf([]string{tkey}, "tmpfs size %q is not a size such as 64m", val)
					continue
				}
				m.TmpfsSize = n
			default:
				c.rep.warnf([]string{tkey}, "tmpfs option %q is ignored", o)
			}
		}
		out = append(out, m)
	}
	return out
}

func (c *converter) ports(s types.ServiceConfig) []model.Port {
	var out []model.Port
	for i, p := range s.Ports {
		key := fmt.Sprintf("services.%s.ports.%d", s.Name, i)
		if p.Target == 0 || p.Target > 65535 {
			c.rep.errorf([]string{key}, "container port %d is not a port number", p.Target)
			continue
		}
		port := model.Port{HostIP: p.HostIP, ContainerPort: uint16(p.Target), Protocol: strings.ToLower(p.Protocol)}
		if port.Protocol == "" {
			port.Protocol = "tcp"
		}
		if p.Published != "" {
			if strings.Contains(p.Published, "-") {
				c.rep.errorf([]string{key}, "host port range %s for one container port is not supported; publish one host port", p.Published)
				continue
			}
			n, err := strconv.ParseUint(p.Published, 10, 16)
			if err != nil {
				c.rep.errorf([]string{key}, "host port %q is not a port number", p.Published)
				continue
			}
			port.HostPort = uint16(n)
		}
		out = append(out, port)
	}
	return out
}

// serviceNetworks maps network keys to extra aliases. A service with no
// networks (or network_mode bridge/default) joins the default network.
func (c *converter) serviceNetworks(s types.ServiceConfig) map[string][]string {
	out := map[string][]string{}
	for net, cfg := range s.Networks {
		var aliases []string
		if cfg != nil {
			for _, al := range cfg.Aliases {
				if al != s.Name && !contains(aliases, al) {
					aliases = append(aliases, al)
				}
			}
		}
		out[net] = aliases
	}
	if len(out) == 0 {
		out["default"] = nil
	}
	if cn := s.ContainerName; cn != "" && cn != s.Name {
		for net, aliases := range out {
			if !contains(aliases, cn) {
				out[net] = append(aliases, cn)
			}
		}
	}
	return out
}

func (c *converter) limits(s types.ServiceConfig) (mem, pids int64) {
	key := "services." + s.Name
	mem, pids = int64(s.MemLimit), s.PidsLimit
	if s.Deploy == nil || s.Deploy.Resources.Limits == nil {
		return mem, pids
	}
	l := s.Deploy.Resources.Limits
	if dm := int64(l.MemoryBytes); dm != 0 {
		if mem != 0 && mem != dm {
			c.rep.warnf([]string{key + ".deploy.resources.limits.memory"}, "both mem_limit and deploy.resources.limits.memory are set; mem_limit (%d bytes) is used", mem)
		} else {
			mem = dm
		}
	}
	if l.Pids != 0 {
		if pids != 0 && pids != l.Pids {
			c.rep.warnf([]string{key + ".deploy.resources.limits.pids"}, "both pids_limit and deploy.resources.limits.pids are set; pids_limit (%d) is used", pids)
		} else {
			pids = l.Pids
		}
	}
	return mem, pids
}

func (c *converter) restart(s types.ServiceConfig) model.RestartPolicy {
	key := "services." + s.Name + ".restart"
	r := s.Restart
	if r == "" && s.Deploy != nil && s.Deploy.RestartPolicy != nil {
		key = "services." + s.Name + ".deploy.restart_policy.condition"
		switch cond := s.Deploy.RestartPolicy.Condition; cond {
		case "", "none":
			r = "no"
		case "any":
			r = "always"
		case "on-failure":
			r = "on-failure"
		default:
			c.rep.errorf([]string{key}, "restart condition %q is not one of none, on-failure, any", cond)
			return model.RestartNo
		}
	}
	switch r {
	case "":
		return model.RestartNo
	case "no", "always", "on-failure", "unless-stopped":
		return model.RestartPolicy(r)
	}
	if n, ok := strings.CutPrefix(r, "on-failure:"); ok {
		if _, err := strconv.Atoi(n); err == nil {
			c.rep.warnf([]string{key}, "the retry limit %s is ignored: Outpost restarts failed services with backoff and reports them", n)
			return model.RestartOnFailure
		}
	}
	c.rep.errorf([]string{key}, "restart %q is not one of no, always, on-failure, unless-stopped", r)
	return model.RestartNo
}

func (c *converter) healthcheck(s types.ServiceConfig) *model.Healthcheck {
	hc := s.HealthCheck
	if hc == nil || hc.Disable {
		return nil
	}
	key := "services." + s.Name + ".healthcheck"
	if len(hc.Test) == 0 {
		c.rep.errorf([]string{key}, "healthcheck has no test: Outpost runs health checks itself and does not read the image's HEALTHCHECK; copy its test here")
		return nil
	}
	if hc.Test[0] == "NONE" {
		return nil
	}
	out := &model.Healthcheck{
		Test:          append([]string(nil), hc.Test...),
		Interval:      orDefault(hc.Interval, model.DefaultHealthInterval),
		Timeout:       orDefault(hc.Timeout, model.DefaultHealthTimeout),
		StartPeriod:   orDefault(hc.StartPeriod, 0),
		StartInterval: orDefault(hc.StartInterval, model.DefaultHealthStartInterval),
		Retries:       model.DefaultHealthRetries,
	}
	if hc.Retries != nil && *hc.Retries > 0 {
		out.Retries = int(min(*hc.Retries, 1<<31-1))
	}
	return out
}

func orDefault(d *types.Duration, def time.Duration) time.Duration {
	if d == nil || *d == 0 {
		return def
	}
	return time.Duration(*d)
}

func (c *converter) dependsOn(s types.ServiceConfig) map[string]model.Dependency {
	if len(s.DependsOn) == 0 {
		return nil
	}
	out := map[string]model.Dependency{}
	for dep, d := range s.DependsOn {
		cond := model.Condition(d.Condition)
		if cond == "" {
			cond = model.ConditionStarted
		}
		out[dep] = model.Dependency{Condition: cond, Required: d.Required, Restart: d.Restart}
	}
	return out
}

// keepReplaced converts the service the embedded proxy replaces as any
// other, without reporting on it (it never runs under Outpost), for
// exports to runtimes that have no embedded proxy.
func (c *converter) keepReplaced(name string) {
	rep, build := c.rep, c.buildOnly[name]
	c.rep = &report{src: rep.src}
	c.replaced = c.service(c.project.Services[name])
	c.rep = rep
	if !build {
		delete(c.buildOnly, name)
	}
}

// replaceProxyService drops depends_on entries on the service the embedded
// proxy replaces.
func (c *converter) replaceProxyService() {
	p := c.proxySvc
	if p == "" {
		return
	}
	if _, ok := c.project.Services[p]; !ok {
		if _, disabled := c.project.DisabledServices[p]; !disabled {
			c.rep.errorf([]string{Extension + ".proxy.service"}, "service %q does not exist", p)
		}
		return
	}
	c.rep.warnf([]string{"services." + p}, "replaced by the embedded proxy: its image, ports, volumes and healthcheck are not used")
	for _, name := range c.appliance.ServiceNames() {
		s := c.appliance.Services[name]
		if _, ok := s.DependsOn[p]; ok {
			delete(s.DependsOn, p)
			if len(s.DependsOn) == 0 {
				s.DependsOn = nil
			}
			c.rep.warnf([]string{"services." + name + ".depends_on." + p, "services." + name + ".depends_on"},
				"dependency on %s dropped: it is replaced by the embedded proxy, which starts before every service", p)
		}
	}
}

// serviceExtensions applies the per-service x-outpost settings.
func (c *converter) serviceExtensions() {
	for _, name := range sortedKeys(c.x.Services) {
		if _, ok := c.project.Services[name]; ok {
			continue
		}
		if _, disabled := c.project.DisabledServices[name]; disabled {
			continue
		}
		k := Extension + ".services." + name
		if name == c.proxySvc && name != "" {
			c.rep.warnf([]string{k}, "settings for %s are ignored: it is replaced by the embedded proxy", name)
			continue
		}
		c.rep.errorf([]string{k}, "service %q does not exist", name)
	}
	for _, name := range sortedKeys(c.xsvc) {
		s, ok := c.appliance.Services[name]
		if !ok {
			continue
		}
		x := c.xsvc[name]
		keys := func(field string) []string {
			return []string{"services." + name + "." + Extension + "." + field, Extension + ".services." + name + "." + field}
		}
		switch x.Role {
		case "":
		case string(model.RoleStateful), string(model.RoleRotatable):
			s.Role = model.Role(x.Role)
		default:
			c.rep.errorf(keys("role"), "role %q is not one of stateful, rotatable", x.Role)
		}
		for i, m := range x.ReadyMarkers {
			if !path.IsAbs(m) {
				c.rep.errorf(keys(fmt.Sprintf("ready_markers.%d", i)), "ready marker %q must be an absolute path inside the container, e.g. /tmp/%s-ready", m, name)
				continue
			}
			s.ReadyMarkers = append(s.ReadyMarkers, path.Clean(m))
		}
		if x.StopTimeout != nil && *x.StopTimeout < 0 {
			c.rep.errorf(keys("stop_timeout"), "stop_timeout must not be negative")
		}
		if b := x.Backup; b != nil {
			if len(b.Command) == 0 {
				c.rep.errorf(keys("backup.command"), "a backup hook needs a command, e.g. [pg_dumpall, -U, postgres]")
			} else {
				s.Backup = &model.BackupHook{Command: []string(b.Command), Restore: []string(b.Restore)}
			}
		}
		for i, sec := range x.Secrets {
			if _, ok := c.x.Secrets[sec]; !ok {
				c.rep.errorf(keys(fmt.Sprintf("secrets.%d", i)), "secret %q is not declared in %s.secrets", sec, Extension)
				continue
			}
			if !contains(s.Secrets, sec) {
				s.Secrets = append(s.Secrets, sec)
			}
		}
	}
}

func (c *converter) proxy() {
	x := c.x.Proxy
	if x == nil {
		return
	}
	const k = Extension + ".proxy"
	p := &model.Proxy{
		Service:         x.Service,
		Caddyfile:       x.Caddyfile,
		Sites:           x.Sites,
		TLS:             model.TLSInternal,
		HealthListen:    DefaultHealthListen,
		CAMount:         x.CAMount,
		CAMountServices: x.CAMountServices,
		MaintenancePage: x.MaintenancePage,
	}
	switch x.TLS {
	case "":
	case string(model.TLSInternal), string(model.TLSACME), string(model.TLSOff):
		p.TLS = model.TLSMode(x.TLS)
	default:
		c.rep.errorf([]string{k + ".tls"}, "tls %q is not one of internal (a local CA, the default), acme, off", x.TLS)
	}
	if x.HealthListen != "" {
		if err := model.CheckLoopback(x.HealthListen); err != nil {
			c.rep.errorf([]string{k + ".health_listen"}, "%v", err)
		} else {
			p.HealthListen = x.HealthListen
		}
	}
	c.checkFile(k+".caddyfile", x.Caddyfile)
	c.checkFile(k+".maintenance_page", x.MaintenancePage)
	if p.CAMount != "" && len(p.CAMountServices) == 0 {
		// No list means every service trusts the local CA.
		p.CAMountServices = c.appliance.ServiceNames()
	}
	for _, r := range x.Routes {
		p.Routes = append(p.Routes, model.Route{
			Path: r.Path, Host: r.Host, Header: r.Header, StripPrefix: r.StripPrefix, Rewrite: r.Rewrite,
			Upstream: r.Upstream, Redirect: r.Redirect, Respond: r.Respond, Status: r.Status, Headers: r.Headers,
		})
	}
	p.Replaced = c.replaced
	c.appliance.Proxy = p
}

// checkFile reports a file named relative to the first Compose file that
// does not exist. Absolute paths are checked as they are.
func (c *converter) checkFile(key, name string) {
	if name == "" {
		return
	}
	p := name
	if !filepath.IsAbs(p) {
		if c.baseDir == "" {
			return // in-memory definition: nothing to resolve against
		}
		p = filepath.Join(c.baseDir, p)
	}
	if _, err := os.Stat(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			c.rep.errorf([]string{key}, "file %s does not exist (paths are relative to the first Compose file)", p)
			return
		}
		c.rep.errorf([]string{key}, "cannot read %s: %v", p, err)
	}
}

func (c *converter) jobs() {
	a := c.appliance
	for _, name := range sortedKeys(c.x.Jobs) {
		x := c.x.Jobs[name]
		k := Extension + ".jobs." + name
		if x == nil {
			c.rep.errorf([]string{k}, "job is empty; it needs at least service and command")
			continue
		}
		j := &model.Job{
			Name:    name,
			Service: x.Service,
			Command: []string(x.Command),
			After:   x.After,
			Before:  x.Before,
			When:    model.JobAlways,
			Timeout: DefaultJobTimeout,
		}
		switch x.When {
		case "":
		case string(model.JobAlways), string(model.JobInstall), string(model.JobUpgrade):
			j.When = model.JobWhen(x.When)
		default:
			c.rep.errorf([]string{k + ".when"}, "when %q is not one of always, install, upgrade", x.When)
		}
		if x.Timeout != nil {
			if *x.Timeout <= 0 {
				c.rep.errorf([]string{k + ".timeout"}, "timeout must be positive")
			} else {
				j.Timeout = *x.Timeout
			}
		}
		if x.Service != "" && x.Service == c.proxySvc {
			c.rep.errorf([]string{k + ".service"}, "service %q is replaced by the embedded proxy and has no image to run a job in", x.Service)
		}
		for field, refs := range map[string][]string{"after": x.After, "before": x.Before} {
			for i, ref := range refs {
				if ref != "" && ref == c.proxySvc {
					c.rep.errorf([]string{fmt.Sprintf("%s.%s.%d", k, field, i)}, "%q is replaced by the embedded proxy, which is always up first; remove it", ref)
				}
			}
		}
		a.Jobs = append(a.Jobs, j)
	}
}

func (c *converter) secrets() {
	used := map[string]bool{}
	for _, s := range c.appliance.Services {
		for _, sec := range s.Secrets {
			used[sec] = true
		}
	}
	for _, name := range sortedKeys(c.x.Secrets) {
		x := c.x.Secrets[name]
		k := Extension + ".secrets." + name
		if x == nil {
			x = &xSecret{}
		}
		s := &model.Secret{Name: name, Generate: x.Generate, Length: DefaultSecretLength, Env: x.Env}
		switch x.Generate {
		case "hex", "base64", "password":
		case "":
			s.Generate = "hex"
		default:
			c.rep.errorf([]string{k + ".generate"}, "generate %q is not one of hex, base64, password", x.Generate)
			s.Generate = "hex" // reported here, not again by Validate
		}
		if x.Length != nil {
			s.Length = *x.Length
		}
		if s.Env == "" {
			s.Env = envName(name)
		}
		if !used[name] {
			c.rep.warnf([]string{k}, "secret %s is not listed in any service's x-outpost secrets; it is generated but not injected", name)
		}
		c.appliance.Secrets = append(c.appliance.Secrets, s)
	}
}

// envName derives the default variable name of a secret: "convex-admin-key"
// becomes CONVEX_ADMIN_KEY.
func envName(secret string) string {
	var b strings.Builder
	for i, r := range strings.ToUpper(secret) {
		switch {
		case r >= 'A' && r <= 'Z', r == '_', r >= '0' && r <= '9' && i > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func (c *converter) checks() {
	x := c.x.Checks
	if x == nil {
		return
	}
	out := &model.Checks{
		RequiredLabels:        x.RequiredLabels,
		SizeBudgets:           nonEmptyMap(x.SizeBudgets),
		CompressedSizeBudgets: nonEmptyMap(x.CompressedSizeBudgets),
		PrivilegeDrop:         x.PrivilegeDrop,
		SecretsIgnore:         x.SecretsIgnore,
	}
	for _, b := range []struct {
		field string
		m     map[string]string
	}{{"size_budgets", x.SizeBudgets}, {"compressed_size_budgets", x.CompressedSizeBudgets}} {
		for _, svc := range sortedKeys(b.m) {
			if _, err := units.FromHumanSize(b.m[svc]); err != nil {
				c.rep.errorf([]string{Extension + ".checks." + b.field + "." + svc}, "%q is not a size such as 400MB", b.m[svc])
			}
		}
	}
	for _, svc := range sortedKeys(x.HealthBudgets) {
		if d := x.HealthBudgets[svc]; d != nil {
			if out.HealthBudgets == nil {
				out.HealthBudgets = map[string]time.Duration{}
			}
			out.HealthBudgets[svc] = *d
		}
	}
	for _, s := range x.Smoke {
		out.Smoke = append(out.Smoke, model.SmokeCheck(s))
	}
	c.appliance.Checks = out
}

// unsupported turns the screening findings into problems and warnings.
func (c *converter) unsupported() {
	for _, f := range c.findings {
		parts := f.Path.Parts()
		for i := range parts {
			parts[i] = strings.ReplaceAll(parts[i], "👻", ".")
		}
		if len(parts) > 1 && parts[0] == "services" {
			svc := parts[1]
			if _, active := c.project.Services[svc]; !active || svc == c.proxySvc {
				continue // not run: profile disabled, or replaced by the proxy
			}
			if len(parts) == 3 && parts[2] == "build" && c.buildOnly[svc] {
				continue // already an error
			}
		}
		c.reportUnsupported(f.Path, f.Value)
	}
}

// reportUnsupported reports one unsupported attribute. A mapping reported
// as a whole whose parts are classified differently (volumes[].volume
// holding both nocopy and subpath) is reported part by part.
func (c *converter) reportUnsupported(p tree.Path, value any) {
	if isZero(value) {
		return
	}
	if m, ok := value.(map[string]any); ok && !hasRule(p) && hasRuleBelow(p) {
		for _, k := range sortedKeys(m) {
			c.reportUnsupported(p.Next(k), m[k])
		}
		return
	}
	r := classify(p)
	key := pathString(p)
	if r.Sev == sevError {
		c.rep.errorf([]string{key}, "%s", r.Message)
	} else {
		c.rep.warnf([]string{key}, "%s", r.Message)
	}
}

// crossChecks reports what needs both Compose and x-outpost to see.
func (c *converter) crossChecks() {
	a := c.appliance
	for _, name := range a.ServiceNames() {
		for _, m := range a.Services[name].Mounts {
			if v, ok := a.Volumes[m.Source]; ok && m.Type == model.MountVolume && v.Legacy {
				c.rep.warnf([]string{Extension + ".volumes.legacy"}, "legacy volume %s is still mounted by %s; a legacy volume is kept only for rollback", m.Source, name)
			}
		}
	}
	for name, s := range a.Services {
		for dep := range s.DependsOn {
			if _, disabled := c.project.DisabledServices[dep]; disabled && s.DependsOn[dep].Required {
				c.rep.errorf([]string{"services." + name + ".depends_on." + dep, "services." + name + ".depends_on"},
					"depends on %s, which only runs with profile(s) %s; activate one or make the dependency required: false", dep, strings.Join(c.project.DisabledServices[dep].Profiles, ", "))
				delete(s.DependsOn, dep) // reported here, not again by Validate
			} else if disabled {
				delete(s.DependsOn, dep)
			}
		}
	}
}

// validateModel runs model.Validate and reports its problems at the source
// keys they come from.
func (c *converter) validateModel() {
	err := c.appliance.Validate()
	var verr *model.ValidationError
	if !errors.As(err, &verr) {
		return
	}
	for _, p := range verr.Problems {
		c.rep.errorf(sourceKeys(p.Key), "%s", p.Message)
	}
}

// sourceKeys translates a model problem key into the places it can be set
// in the Compose files, most specific first.
func sourceKeys(key string) []string {
	parts := strings.SplitN(key, ".", 4)
	switch parts[0] {
	case "name":
		return []string{Extension + ".name", "name"}
	case "proxy", "jobs", "secrets", "checks":
		return []string{Extension + "." + key}
	case "volume_migrations":
		return []string{Extension + ".volumes.migrations" + strings.TrimPrefix(key, "volume_migrations")}
	case "services":
		if len(parts) >= 3 {
			switch parts[2] {
			case "role", "ready_markers", "backup", "secrets":
				rest := strings.Join(parts[2:], ".")
				return []string{
					"services." + parts[1] + "." + Extension + "." + rest,
					Extension + ".services." + parts[1] + "." + rest,
				}
			}
		}
	}
	return []string{key}
}

func environ(m types.MappingWithEquals) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != nil { // "- FOO" with FOO unset: not set in the container
			out[k] = *v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func extraHosts(h types.HostsList) []string {
	var out []string
	for _, host := range sortedKeys(h) {
		for _, ip := range h[host] {
			out = append(out, host+":"+ip)
		}
	}
	return out
}

func ulimits(u map[string]*types.UlimitsConfig) map[string]model.Ulimit {
	if len(u) == 0 {
		return nil
	}
	out := map[string]model.Ulimit{}
	for name, l := range u {
		if l == nil {
			continue
		}
		if l.Single != 0 {
			out[name] = model.Ulimit{Soft: int64(l.Single), Hard: int64(l.Single)}
			continue
		}
		out[name] = model.Ulimit{Soft: int64(l.Soft), Hard: int64(l.Hard)}
	}
	return out
}

func cloneCommand(c types.ShellCommand) []string {
	if c == nil {
		return nil
	}
	return append([]string{}, c...)
}

func cloneStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

func nonEmptyMap[M ~map[string]string](m M) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
