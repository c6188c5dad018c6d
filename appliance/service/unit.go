// Package service installs an appliance as a systemd system service: it
// decides where an installed appliance's files live (Layout), renders its
// unit from the template in systemd/ (Render, a pure function with golden
// tests), sizes the unit's start and stop timeouts from the definition
// (Timeouts), and drives the service manager (Manager). It is the only
// importer of github.com/kardianos/service; it creates no users and touches
// no containers — the CLI's install verb composes those steps.
package service

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/plan"
	"github.com/outpostdev/outpost/systemd"
)

// Where installed appliances live; Layout appends the appliance name.
const (
	StateRoot   = "/var/lib/outpost"
	ConfigRoot  = "/etc/outpost"
	RuntimeRoot = "/run/outpost"
	// DefaultBinary is where install puts the outpost binary.
	DefaultBinary = "/usr/local/bin/outpost"
	// userPrefix prefixes service users and unit names.
	userPrefix = "outpost-"
	// maxUserName is the longest user name useradd accepts.
	maxUserName = 32
)

// Layout is where one installed appliance's pieces live.
type Layout struct {
	// Appliance is the appliance name.
	Appliance string `json:"appliance"`
	// UnitName is the systemd unit without ".service": "outpost-<name>",
	// or the name itself when it already starts with "outpost-".
	UnitName string `json:"unit"`
	// User is the service user (and its group), named like the unit unless
	// chosen at install.
	User string `json:"user"`
	// StateDir is the user's home: outpost.db, secrets, and Podman's
	// storage (images, volumes) below .local/share/containers. 0700.
	StateDir string `json:"state_dir"`
	// ConfigDir holds the copied definition (Compose and env files) and
	// install.json; root-owned, readable by the user's group. 0750.
	ConfigDir string `json:"config_dir"`
	// RuntimeDir is the unit's XDG_RUNTIME_DIR (/run/outpost/<name>); the
	// control socket is RuntimeDir/outpost/outpost.sock.
	RuntimeDir string `json:"runtime_dir"`
}

// LayoutFor returns the default layout of appliance name. user overrides
// the service user's name when not empty.
func LayoutFor(name, user string) (Layout, error) {
	if !model.ValidName(name) {
		return Layout{}, fmt.Errorf("appliance name %q: use lower-case letters, digits, '-' and '_' (pass --name)", name)
	}
	unit := name
	if !strings.HasPrefix(unit, userPrefix) {
		unit = userPrefix + name
	}
	if user == "" {
		user = unit
	}
	if len(user) > maxUserName {
		return Layout{}, fmt.Errorf("service user name %q is longer than %d characters; choose one with --user", user, maxUserName)
	}
	return Layout{
		Appliance:  name,
		UnitName:   unit,
		User:       user,
		StateDir:   filepath.Join(StateRoot, name),
		ConfigDir:  filepath.Join(ConfigRoot, name),
		RuntimeDir: filepath.Join(RuntimeRoot, name),
	}, nil
}

// SocketPath is the daemon's control socket.
func (l Layout) SocketPath() string { return filepath.Join(l.RuntimeDir, "outpost", "outpost.sock") }

// UnitPath is the unit file's path.
func (l Layout) UnitPath() string { return "/etc/systemd/system/" + l.UnitName + ".service" }

// Env is the environment the unit gives `outpost run` (and that install
// gives the helper commands it runs as the service user), as KEY=value.
func (l Layout) Env(containerHost string) []string {
	env := []string{
		"XDG_RUNTIME_DIR=" + l.RuntimeDir,
		"OUTPOST_STATE_DIR=" + l.StateDir,
		"OUTPOST_RUNTIME_DIR=" + filepath.Join(l.RuntimeDir, "outpost"),
	}
	if containerHost != "" {
		env = append(env, "CONTAINER_HOST="+containerHost)
	}
	return env
}

// Unit is what the unit template needs.
type Unit struct {
	Layout
	// Version is the appliance's version, shown in the description.
	Version string
	// Group is the service user's primary group; default User.
	Group string
	// Binary is the outpost executable; default DefaultBinary.
	Binary string
	// Args follow `outpost run` (definition flags: -f, --env-file, --profile,
	// --name).
	Args []string
	// ContainerHost, when set, is passed as CONTAINER_HOST: the daemon uses
	// that Podman socket instead of starting its own podman service.
	ContainerHost string
	// Timeouts are the start and stop bounds (see Timeouts).
	Timeouts TimeoutPlan
	// LimitNOFILE is the open-files limit of the daemon and its Podman;
	// 0 renders DefaultNoFile.
	LimitNOFILE uint64
}

// DefaultNoFile is LimitNOFILE when none is computed: what databases commonly
// ask for.
const DefaultNoFile = 65536

// unitView is the template's data.
type unitView struct {
	Unit
	RuntimeDirectory                string
	ExecStart                       string
	StartChain, StopChain           string
	StartSlack, StartMargin         string
	StopSlack, StopMargin           string
	TimeoutStartSec, TimeoutStopSec string
}

// Render renders the unit file of u from systemd/outpost.service.tmpl. It is
// a pure function of u.
func Render(u Unit) (string, error) {
	if u.Group == "" {
		u.Group = u.User
	}
	if u.Binary == "" {
		u.Binary = DefaultBinary
	}
	if u.LimitNOFILE == 0 {
		u.LimitNOFILE = DefaultNoFile
	}
	for what, v := range map[string]string{"unit name": u.UnitName, "user": u.User, "group": u.Group} {
		if v == "" || strings.ContainsAny(v, " \t\n\"'\\%$/") {
			return "", fmt.Errorf("rendering unit: %s %q is empty or has characters a unit file cannot hold", what, v)
		}
	}
	for what, v := range map[string]string{"state dir": u.StateDir, "config dir": u.ConfigDir, "runtime dir": u.RuntimeDir, "container host": u.ContainerHost} {
		if strings.ContainsAny(v, "\n\"\\%$") {
			return "", fmt.Errorf("rendering unit: %s %q has characters a unit file cannot hold", what, v)
		}
	}
	rel, ok := strings.CutPrefix(u.RuntimeDir, "/run/")
	if !ok || rel == "" {
		return "", fmt.Errorf("rendering unit: runtime dir %q must be below /run", u.RuntimeDir)
	}
	v := unitView{
		Unit:             u,
		RuntimeDirectory: rel,
		ExecStart:        execLine(append([]string{u.Binary, "run", "--log-level", "info"}, u.Args...)),
		StartChain:       chain(u.Timeouts.StartChain),
		StopChain:        chain(u.Timeouts.StopLevels),
		StartSlack:       u.Timeouts.StartSlack.String(),
		StartMargin:      u.Timeouts.StartMargin.String(),
		StopSlack:        u.Timeouts.StopSlack.String(),
		StopMargin:       u.Timeouts.StopMargin.String(),
		TimeoutStartSec:  seconds(u.Timeouts.Start),
		TimeoutStopSec:   seconds(u.Timeouts.Stop),
	}
	t, err := template.New("outpost.service.tmpl").Option("missingkey=error").Parse(systemd.ServiceTemplate)
	if err != nil {
		return "", fmt.Errorf("parsing the unit template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return "", fmt.Errorf("rendering the unit template: %w", err)
	}
	return b.String(), nil
}

func chain(names []string) string {
	if len(names) == 0 {
		return "(none)"
	}
	return strings.Join(names, " → ")
}

func seconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(s, 10) + "s"
}

// execLine quotes a command line for ExecStart=: arguments with spaces,
// quotes or backslashes are double-quoted, and "$" and "%" (systemd's
// variable and specifier characters) are doubled.
func execLine(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		a = strings.ReplaceAll(a, "%", "%%")
		a = strings.ReplaceAll(a, "$", "$$")
		if a == "" || strings.ContainsAny(a, " \t\"'\\;") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// TimeoutPlan is how long systemd waits for the appliance to start and to
// stop, with the chains that determine it (for the unit's comments).
type TimeoutPlan struct {
	// Start is TimeoutStartSec: the longest chain of start steps, each a
	// service's start period plus its health retries (or a job's timeout)
	// plus StartSlack, plus StartMargin.
	Start time.Duration
	// StartChain is that chain, dependencies first.
	StartChain []string
	// Stop is TimeoutStopSec: the levels stop one after another, each
	// within its longest stop_grace_period plus StopSlack, plus StopMargin.
	Stop time.Duration
	// StopLevels describes each level's slowest service, in stop order.
	StopLevels                                     []string
	StartSlack, StartMargin, StopSlack, StopMargin time.Duration
}

// Timeout slack: per step for creating and starting a container (or
// stopping it through the API), and once for the daemon's own start (its
// podman service, image checks) and stop.
const (
	startSlack  = 10 * time.Second
	startMargin = 60 * time.Second
	stopSlack   = 5 * time.Second
	stopMargin  = 30 * time.Second
)

// Timeouts sizes the unit's start and stop timeouts for app. A start step
// may take up to the service's start_period plus retries × (interval +
// timeout) before Outpost declares it failed, so a healthy start always
// fits; jobs count their timeout. Stopping follows the runtime: dependants
// first, one level at a time, the services of a level in parallel.
func Timeouts(app *model.Appliance) (TimeoutPlan, error) {
	p := TimeoutPlan{StartSlack: startSlack, StartMargin: startMargin, StopSlack: stopSlack, StopMargin: stopMargin}
	dag, err := plan.Graph(app, nil)
	if err != nil {
		return p, fmt.Errorf("sizing the unit's timeouts: %w", err)
	}
	jobs := map[string]*model.Job{}
	for _, j := range app.Jobs {
		jobs[j.Name] = j
	}
	step := func(name string) time.Duration {
		if j, ok := jobs[name]; ok && app.Services[name] == nil {
			return j.Timeout + startSlack
		}
		svc := app.Services[name]
		if svc == nil || svc.Healthcheck == nil {
			return startSlack
		}
		return healthBound(svc.Healthcheck) + startSlack
	}
	// Longest weighted path: nodes in start order, so dependencies are done.
	total := map[string]time.Duration{}
	prev := map[string]string{}
	var end string
	for _, n := range dag.Order() {
		var best time.Duration
		bestDep := ""
		deps := make([]string, 0, len(dag.Node(n).Deps))
		for d := range dag.Node(n).Deps {
			deps = append(deps, d)
		}
		sort.Strings(deps)
		for _, d := range deps {
			if total[d] > best || bestDep == "" {
				best, bestDep = total[d], d
			}
		}
		total[n] = best + step(n)
		prev[n] = bestDep
		if end == "" || total[n] > total[end] {
			end = n
		}
	}
	for n := end; n != ""; n = prev[n] {
		p.StartChain = append([]string{fmt.Sprintf("%s %s", n, step(n))}, p.StartChain...)
	}
	p.Start = total[end] + startMargin

	levels := dag.Levels()
	for i := len(levels) - 1; i >= 0; i-- {
		var slowest string
		var longest time.Duration
		for _, n := range levels[i] {
			svc := app.Services[n]
			if svc == nil {
				continue
			}
			g := svc.StopGracePeriod
			if g <= 0 {
				g = model.DefaultStopGrace
			}
			if slowest == "" || g > longest {
				slowest, longest = n, g
			}
		}
		if slowest == "" {
			continue
		}
		p.Stop += longest + stopSlack
		p.StopLevels = append(p.StopLevels, fmt.Sprintf("%s %s", slowest, longest))
	}
	p.Stop += stopMargin
	return p, nil
}

// healthBound is the longest a service can stay "starting" under Compose
// rules before it is healthy or failed.
func healthBound(hc *model.Healthcheck) time.Duration {
	interval, timeout, retries := hc.Interval, hc.Timeout, hc.Retries
	if interval <= 0 {
		interval = model.DefaultHealthInterval
	}
	if timeout <= 0 {
		timeout = model.DefaultHealthTimeout
	}
	if retries <= 0 {
		retries = model.DefaultHealthRetries
	}
	return hc.StartPeriod + time.Duration(retries)*(interval+timeout)
}

// HardNoFile returns the LimitNOFILE to render: the largest nofile an
// appliance's service asks for (at least DefaultNoFile), capped at hard,
// the hard limit systemd can grant here (0: no cap).
func HardNoFile(app *model.Appliance, hard uint64) uint64 {
	want := uint64(DefaultNoFile)
	for _, svc := range app.Services {
		if u, ok := svc.Ulimits["nofile"]; ok && uint64(max(u.Soft, u.Hard)) > want {
			want = uint64(max(u.Soft, u.Hard))
		}
	}
	if hard > 0 && want > hard {
		want = hard
	}
	return want
}
