package model

import (
	"fmt"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Problem is one reason an Appliance is invalid. Key is a dotted path in the
// model's own vocabulary, which follows the Compose and x-outpost key names:
// "services.db.depends_on.cache", "jobs.migrate.after", "proxy.tls",
// "secrets.api-key.env". Loaders translate it to a location in their source.
type Problem struct {
	Key     string `json:"key"`
	Message string `json:"message"`
}

// String renders the problem as "key: message".
func (p Problem) String() string {
	if p.Key == "" {
		return p.Message
	}
	return p.Key + ": " + p.Message
}

// ValidationError lists every problem Validate found, in a stable order.
type ValidationError struct {
	Problems []Problem
}

// Error renders every problem, one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("invalid appliance (%d problems):\n  %s", len(e.Problems), strings.Join(lines, "\n  "))
}

// Name rules: appliance names prefix every Podman object; job names end up
// in container names, so both are kept to what Podman and DNS accept.
var (
	nameRe    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	jobNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidName reports whether s is usable as an appliance name: lowercase
// letters, digits, '_' and '-', starting with a letter or digit.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// Validate checks the invariants every consumer of an Appliance relies on:
// names, references between services, jobs, volumes, networks and secrets,
// enumerated values, and that the start order has no cycle. It returns nil
// or a *ValidationError listing every problem, not just the first.
func (a *Appliance) Validate() error {
	v := &validator{a: a}
	v.run()
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

type validator struct {
	a        *Appliance
	problems []Problem
}

func (v *validator) addf(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) run() {
	a := v.a
	switch {
	case a.Name == "":
		v.addf("name", "the appliance has no name; set x-outpost.name")
	case !ValidName(a.Name):
		v.addf("name", "%q is not a valid appliance name; use lowercase letters, digits, '_' and '-', starting with a letter or digit", a.Name)
	}
	if len(a.Services) == 0 {
		v.addf("services", "the appliance has no services")
	}
	jobs := map[string]*Job{}
	for i, j := range a.Jobs {
		if j == nil {
			v.addf(fmt.Sprintf("jobs.%d", i), "job is empty")
			continue
		}
		if _, dup := jobs[j.Name]; dup {
			v.addf("jobs."+j.Name, "job %q is declared twice", j.Name)
		}
		jobs[j.Name] = j
	}
	secrets := map[string]bool{}
	for _, s := range a.Secrets {
		if s != nil {
			secrets[s.Name] = true
		}
	}
	v.services(jobs, secrets)
	v.volumes()
	v.networks()
	v.proxy()
	v.jobs(jobs)
	v.secrets()
	v.checks()
	v.migrations()
	v.ports()
	v.cycles(jobs)
}

func (v *validator) services(jobs map[string]*Job, secrets map[string]bool) {
	a := v.a
	for _, name := range a.ServiceNames() {
		s := a.Services[name]
		key := "services." + name
		if s == nil {
			v.addf(key, "service is empty")
			continue
		}
		if s.Name != name {
			v.addf(key, "service is stored under %q but named %q", name, s.Name)
		}
		if _, clash := jobs[name]; clash {
			v.addf(key, "a service and a job are both named %q; rename one", name)
		}
		if s.Image == "" {
			v.addf(key+".image", "service has no image")
		}
		switch s.Role {
		case RoleStateful, RoleRotatable:
		default:
			v.addf(key+".role", "role %q is not one of stateful, rotatable", s.Role)
		}
		switch s.Restart {
		case RestartNo, RestartAlways, RestartOnFailure, RestartUnlessStopped:
		default:
			v.addf(key+".restart", "restart %q is not one of no, always, on-failure, unless-stopped", s.Restart)
		}
		if s.StopGracePeriod < 0 {
			v.addf(key+".stop_grace_period", "stop grace period %s is negative", s.StopGracePeriod)
		}
		for _, m := range s.ReadyMarkers {
			if !path.IsAbs(m) {
				v.addf(key+".ready_markers", "ready marker %q is not an absolute path inside the container", m)
			}
		}
		v.mounts(key, s)
		for net := range s.Networks {
			if _, ok := a.Networks[net]; !ok {
				v.addf(key+".networks", "network %q is not declared under top-level networks", net)
			}
		}
		for _, dep := range sortedKeys(s.DependsOn) {
			v.dependency(key, name, dep, s.DependsOn[dep], jobs)
		}
		if h := s.Healthcheck; h != nil {
			switch {
			case len(h.Test) == 0:
				v.addf(key+".healthcheck.test", "healthcheck has no test")
			case h.Test[0] != "CMD" && h.Test[0] != "CMD-SHELL":
				v.addf(key+".healthcheck.test", "healthcheck test must start with CMD or CMD-SHELL, not %q", h.Test[0])
			case len(h.Test) < 2:
				v.addf(key+".healthcheck.test", "healthcheck test %s has no command", h.Test[0])
			}
			if h.Interval < 0 || h.Timeout < 0 || h.StartPeriod < 0 || h.StartInterval < 0 || h.Retries < 0 {
				v.addf(key+".healthcheck", "healthcheck durations and retries must not be negative")
			}
		}
		for _, sec := range s.Secrets {
			if !secrets[sec] {
				v.addf(key+".secrets", "secret %q is not declared in x-outpost.secrets", sec)
			}
		}
		if s.Backup != nil && len(s.Backup.Command) == 0 {
			v.addf(key+".backup.command", "backup hook has no command")
		}
	}
}

func (v *validator) mounts(key string, s *Service) {
	targets := map[string]bool{}
	for _, m := range s.Mounts {
		if !path.IsAbs(m.Target) {
			v.addf(key+".volumes", "mount target %q is not an absolute path", m.Target)
		}
		if targets[path.Clean(m.Target)] {
			v.addf(key+".volumes", "two mounts share the target %q", m.Target)
		}
		targets[path.Clean(m.Target)] = true
		switch m.Type {
		case MountVolume:
			if _, ok := v.a.Volumes[m.Source]; !ok {
				v.addf(key+".volumes", "volume %q is not declared under top-level volumes", m.Source)
			}
		case MountBind:
			if !path.IsAbs(m.Source) {
				v.addf(key+".volumes", "bind source %q is not an absolute host path", m.Source)
			}
		case MountTmpfs:
			if m.Source != "" {
				v.addf(key+".tmpfs", "tmpfs mount at %q has a source", m.Target)
			}
		default:
			v.addf(key+".volumes", "mount type %q is not one of volume, bind, tmpfs", m.Type)
		}
	}
}

func (v *validator) dependency(key, name, dep string, d Dependency, jobs map[string]*Job) {
	dkey := key + ".depends_on." + dep
	switch d.Condition {
	case ConditionStarted, ConditionHealthy, ConditionCompleted:
	default:
		v.addf(dkey, "condition %q is not one of %s, %s, %s", d.Condition, ConditionStarted, ConditionHealthy, ConditionCompleted)
		return
	}
	if dep == name {
		v.addf(dkey, "service depends on itself")
		return
	}
	if j, isJob := jobs[dep]; isJob {
		// A job that does not run in an operation is left out of its start
		// order; a required wait on it could never be met.
		if j.When != JobAlways && d.Required {
			v.addf(dkey, "job %q runs only on %s; list %q in the job's before: instead of depending on it", dep, j.When, name)
		}
		return
	}
	target, ok := v.a.Services[dep]
	if !ok {
		if d.Required {
			v.addf(dkey, "depends on %q, which is neither a service nor a job", dep)
		}
		return
	}
	if d.Condition == ConditionHealthy && target != nil && target.Healthcheck == nil && len(target.ReadyMarkers) == 0 {
		v.addf(dkey, "waits for %q to be healthy, but %q has no healthcheck and no ready markers; add one or use condition %s", dep, dep, ConditionStarted)
	}
}

func (v *validator) volumes() {
	for _, k := range sortedKeys(v.a.Volumes) {
		vol := v.a.Volumes[k]
		key := "volumes." + k
		switch {
		case vol == nil:
			v.addf(key, "volume is empty")
		case vol.Key != k:
			v.addf(key, "volume is stored under %q but has key %q", k, vol.Key)
		case vol.Name == "":
			v.addf(key, "volume has no Podman name")
		}
	}
}

func (v *validator) networks() {
	if _, ok := v.a.Networks["default"]; !ok {
		v.addf("networks.default", "the default network is missing")
	}
	for _, k := range sortedKeys(v.a.Networks) {
		n := v.a.Networks[k]
		key := "networks." + k
		switch {
		case n == nil:
			v.addf(key, "network is empty")
		case n.Key != k:
			v.addf(key, "network is stored under %q but has key %q", k, n.Key)
		case n.Name == "":
			v.addf(key, "network has no Podman name")
		}
	}
}

func (v *validator) proxy() {
	p := v.a.Proxy
	if p == nil {
		return
	}
	switch p.TLS {
	case TLSInternal, TLSACME, TLSOff:
	default:
		v.addf("proxy.tls", "tls %q is not one of internal, acme, off", p.TLS)
	}
	if p.HealthListen != "" {
		if err := CheckLoopback(p.HealthListen); err != nil {
			v.addf("proxy.health_listen", "%v", err)
		}
	}
	if p.Service != "" {
		if _, ok := v.a.Services[p.Service]; ok {
			v.addf("proxy.service", "service %q is replaced by the embedded proxy and must not also run as a container", p.Service)
		}
	}
	if p.CAMount != "" && !path.IsAbs(p.CAMount) {
		v.addf("proxy.ca_mount", "ca_mount %q is not an absolute path inside the containers", p.CAMount)
	}
	if p.CAMount == "" && len(p.CAMountServices) > 0 {
		v.addf("proxy.ca_mount_services", "ca_mount_services is set but ca_mount is not; set where the CA root is mounted")
	}
	for _, s := range p.CAMountServices {
		if _, ok := v.a.Services[s]; !ok {
			v.addf("proxy.ca_mount_services", "service %q does not exist", s)
		}
	}
	switch {
	case p.Caddyfile != "" && len(p.Routes) > 0:
		v.addf("proxy", "set either caddyfile or routes, not both")
	case p.Caddyfile == "" && len(p.Routes) == 0:
		v.addf("proxy", "the proxy has neither a caddyfile nor routes; add one")
	case len(p.Routes) > 0 && len(p.Sites) == 0:
		v.addf("proxy.sites", "routes need at least one site address, e.g. \"https://app.example.internal\" or \":80\"")
	}
	for i, r := range p.Routes {
		key := fmt.Sprintf("proxy.routes.%d", i)
		n := 0
		for _, s := range []string{r.Upstream, r.Redirect, r.Respond} {
			if s != "" {
				n++
			}
		}
		if n != 1 {
			v.addf(key, "a route needs exactly one of upstream, redirect, respond")
		}
		if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
			v.addf(key+".path", "path %q must start with /", r.Path)
		}
		if r.Status != 0 && (r.Status < 100 || r.Status > 599) {
			v.addf(key+".status", "status %d is not an HTTP status code", r.Status)
		}
		if r.Upstream != "" {
			svc, port, err := net.SplitHostPort(r.Upstream)
			if err != nil {
				v.addf(key+".upstream", "upstream %q is not service:port", r.Upstream)
				continue
			}
			if _, ok := v.a.Services[svc]; !ok {
				v.addf(key+".upstream", "upstream service %q does not exist", svc)
			}
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				v.addf(key+".upstream", "upstream port %q is not a port number", port)
			}
		}
	}
}

// CheckLoopback returns an error unless addr is host:port with a loopback
// host (127.0.0.0/8, ::1 or localhost) and a numeric port.
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; the health listener must stay on the box, e.g. 127.0.0.1:2020", addr)
	}
	return nil
}

func (v *validator) jobs(jobs map[string]*Job) {
	for _, name := range sortedKeys(jobs) {
		j := jobs[name]
		key := "jobs." + name
		if !jobNameRe.MatchString(name) {
			v.addf(key, "job name %q must start with a letter or digit and contain only letters, digits, '_', '.' and '-'", name)
		}
		if j.Service == "" {
			v.addf(key+".service", "job names no service whose image it runs in")
		} else if _, ok := v.a.Services[j.Service]; !ok {
			v.addf(key+".service", "service %q does not exist", j.Service)
		}
		if len(j.Command) == 0 {
			v.addf(key+".command", "job has no command")
		}
		for _, field := range []struct {
			name  string
			items []string
		}{{"after", j.After}, {"before", j.Before}} {
			for _, ref := range field.items {
				_, isSvc := v.a.Services[ref]
				_, isJob := jobs[ref]
				switch {
				case ref == name:
					v.addf(key+"."+field.name, "job refers to itself")
				case !isSvc && !isJob:
					v.addf(key+"."+field.name, "%q is neither a service nor a job", ref)
				}
			}
		}
		switch j.When {
		case JobAlways, JobInstall, JobUpgrade:
		default:
			v.addf(key+".when", "when %q is not one of always, install, upgrade", j.When)
		}
		if j.Timeout < 0 {
			v.addf(key+".timeout", "timeout %s is negative", j.Timeout)
		}
	}
}

func (v *validator) secrets() {
	seen := map[string]bool{}
	envs := map[string]string{}
	for i, s := range v.a.Secrets {
		if s == nil {
			v.addf(fmt.Sprintf("secrets.%d", i), "secret is empty")
			continue
		}
		key := "secrets." + s.Name
		if s.Name == "" {
			v.addf(fmt.Sprintf("secrets.%d", i), "secret has no name")
		}
		if seen[s.Name] {
			v.addf(key, "secret %q is declared twice", s.Name)
		}
		seen[s.Name] = true
		switch s.Generate {
		case "hex", "base64", "password":
		default:
			v.addf(key+".generate", "generate %q is not one of hex, base64, password", s.Generate)
		}
		if s.Length <= 0 || s.Length > 4096 {
			v.addf(key+".length", "length %d is outside 1..4096", s.Length)
		}
		if s.Env != "" {
			if !envNameRe.MatchString(s.Env) {
				v.addf(key+".env", "%q is not a valid environment variable name", s.Env)
			} else if other, dup := envs[s.Env]; dup {
				v.addf(key+".env", "secrets %q and %q are both injected as %s", other, s.Name, s.Env)
			}
			envs[s.Env] = s.Name
		}
	}
}

func (v *validator) checks() {
	c := v.a.Checks
	if c == nil {
		return
	}
	for i, l := range c.RequiredLabels {
		if strings.TrimSpace(l) == "" {
			v.addf(fmt.Sprintf("checks.required_labels.%d", i), "label name is empty")
		}
	}
	for _, b := range []struct {
		field string
		m     map[string]string
	}{{"size_budgets", c.SizeBudgets}, {"compressed_size_budgets", c.CompressedSizeBudgets}} {
		for _, k := range sortedKeys(b.m) {
			if _, ok := v.a.Services[k]; !ok {
				v.addf("checks."+b.field+"."+k, "service %q does not exist", k)
			}
		}
	}
	for _, k := range sortedKeys(c.HealthBudgets) {
		if _, ok := v.a.Services[k]; !ok {
			v.addf("checks.health_budgets."+k, "service %q does not exist", k)
		} else if c.HealthBudgets[k] <= 0 {
			v.addf("checks.health_budgets."+k, "budget must be positive")
		}
	}
	for i, s := range c.PrivilegeDrop {
		if _, ok := v.a.Services[s]; !ok {
			v.addf(fmt.Sprintf("checks.privilege_drop.%d", i), "service %q does not exist", s)
		}
	}
	for i, s := range c.SecretsIgnore {
		if strings.TrimSpace(s) == "" {
			v.addf(fmt.Sprintf("checks.secrets_ignore.%d", i), "entry is empty")
		}
	}
	names := map[string]bool{}
	for i, s := range c.Smoke {
		key := fmt.Sprintf("checks.smoke.%d", i)
		if s.Name == "" {
			v.addf(key+".name", "smoke check has no name")
		} else if names[s.Name] {
			v.addf(key+".name", "smoke check %q is declared twice", s.Name)
		}
		names[s.Name] = true
		if s.URL == "" && s.Target == "" {
			v.addf(key, "smoke check needs a url or a target")
		}
		if s.From != "" {
			if _, ok := v.a.Services[s.From]; !ok {
				v.addf(key+".from", "service %q does not exist", s.From)
			}
		}
		if s.Status != 0 && (s.Status < 100 || s.Status > 599) {
			v.addf(key+".status", "status %d is not an HTTP status code", s.Status)
		}
	}
}

func (v *validator) migrations() {
	for i, m := range v.a.VolumeMigrations {
		key := fmt.Sprintf("volume_migrations.%d", i)
		for _, end := range []struct{ field, vol string }{{"from", m.From}, {"to", m.To}} {
			if _, ok := v.a.Volumes[end.vol]; !ok {
				v.addf(key+"."+end.field, "volume %q is not declared", end.vol)
			}
		}
		if m.From == m.To {
			v.addf(key, "a migration must copy between two different volumes")
		}
	}
}

// ports reports host ports published twice: the second container would fail
// to start, long after the definition was accepted.
func (v *validator) ports() {
	type binding struct {
		ip    string
		port  uint16
		proto string
	}
	owner := map[binding]string{}
	for _, name := range v.a.ServiceNames() {
		s := v.a.Services[name]
		if s == nil {
			continue
		}
		for _, p := range s.Ports {
			key := "services." + name + ".ports"
			if p.ContainerPort == 0 {
				v.addf(key, "port has no container port")
			}
			if p.Protocol != "tcp" && p.Protocol != "udp" {
				v.addf(key, "protocol %q is not one of tcp, udp", p.Protocol)
			}
			if p.HostPort == 0 {
				continue
			}
			b := binding{p.HostIP, p.HostPort, p.Protocol}
			if other, dup := owner[b]; dup {
				v.addf(key, "host port %d/%s is already published by %s", p.HostPort, p.Protocol, other)
				continue
			}
			owner[b] = name
		}
	}
}

// cycles reports every dependency cycle among services and jobs, each once,
// as a path "a -> b -> a".
func (v *validator) cycles(jobs map[string]*Job) {
	edges := map[string][]string{} // node -> nodes it waits for
	keyOf := map[string]string{}   // node -> problem key
	exists := func(n string) bool {
		_, s := v.a.Services[n]
		_, j := jobs[n]
		return s || j
	}
	for name, s := range v.a.Services {
		keyOf[name] = "services." + name + ".depends_on"
		if s == nil {
			continue
		}
		for dep := range s.DependsOn {
			if exists(dep) && dep != name {
				edges[name] = append(edges[name], dep)
			}
		}
	}
	for name, j := range jobs {
		keyOf[name] = "jobs." + name + ".after"
		for _, dep := range j.After {
			if exists(dep) && dep != name {
				edges[name] = append(edges[name], dep)
			}
		}
		for _, waiter := range j.Before {
			if exists(waiter) && waiter != name {
				edges[waiter] = append(edges[waiter], name)
			}
		}
	}
	nodes := make([]string, 0, len(keyOf))
	for n := range keyOf {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for n := range edges {
		sort.Strings(edges[n])
	}

	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	seen := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range edges[n] {
			switch color[d] {
			case white:
				visit(d)
			case grey:
				i := len(stack) - 1
				for stack[i] != d {
					i--
				}
				cycle := append(append([]string{}, stack[i:]...), d)
				id := canonicalCycle(cycle[:len(cycle)-1])
				if !seen[id] {
					seen[id] = true
					v.addf(keyOf[d], "dependency cycle: %s; remove one of these dependencies", strings.Join(cycle, " -> "))
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
	}
	for _, n := range nodes {
		if color[n] == white {
			visit(n)
		}
	}
}

// canonicalCycle identifies a cycle independently of where it was entered.
func canonicalCycle(c []string) string {
	min := 0
	for i := range c {
		if c[i] < c[min] {
			min = i
		}
	}
	rot := append(append([]string{}, c[min:]...), c[:min]...)
	return strings.Join(rot, "\x00")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
