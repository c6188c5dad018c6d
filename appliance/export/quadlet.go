package export

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/systemd/parser"

	"github.com/outpostdev/outpost/appliance/model"
)

// QuadletFile is one unit file of a Quadlet export.
type QuadletFile struct {
	// Name is the file name: <unit>.container, .volume or .network.
	Name string
	// Content is the unit file's text.
	Content string
}

// Quadlet returns app as Podman Quadlet units (Podman 5): a .network per
// network, a .volume per named volume, a .container per service, job and
// replaced proxy service, with depends_on as systemd ordering on health
// (Notify=healthy), secrets as Podman secrets the operator creates, and the
// notes on what they do not carry over. Units are written with Podman's
// own unit-file writer; values that reach the podman command line have
// systemd's '%' and '$' escaped.
func Quadlet(app *model.Appliance, opts QuadletOptions) ([]QuadletFile, []Note, error) {
	q := &quadlet{app: app, opts: opts}
	q.appNotes()
	for _, key := range sortedKeys(app.Networks) {
		q.network(app.Networks[key])
	}
	for _, key := range sortedKeys(app.Volumes) {
		q.volume(app.Volumes[key])
	}
	for _, name := range app.ServiceNames() {
		if err := q.container(app.Services[name], nil); err != nil {
			return nil, nil, err
		}
	}
	if p := app.Proxy; p != nil && p.Replaced != nil {
		if err := q.container(p.Replaced, nil); err != nil {
			return nil, nil, err
		}
	}
	for _, j := range app.Jobs {
		svc, err := jobService(app, j)
		if err != nil {
			return nil, nil, err
		}
		if err := q.container(svc, j); err != nil {
			return nil, nil, err
		}
	}
	if q.err != nil {
		return nil, nil, q.err
	}
	return q.files, q.notes, nil
}

// QuadletOptions configure Quadlet.
type QuadletOptions struct {
	// SecretsDir is where the secret files are, for the note on how to
	// create the Podman secrets; empty: a placeholder.
	SecretsDir string
}

type quadlet struct {
	noter
	app   *model.Appliance
	opts  QuadletOptions
	files []QuadletFile
	err   error // the first unit that could not be written
}

func (q *quadlet) appNotes() {
	q.proxyNote(q.app, "run a proxy of your own")
	if len(q.app.VolumeMigrations) > 0 {
		q.note("x-outpost.volumes.migrations", "not exported: they are an Outpost upgrade step")
	}
	if q.app.Backup != nil {
		q.note("x-outpost.backup", "the snapshot schedule is not exported")
	}
	if len(q.app.Secrets) > 0 {
		dir := q.opts.SecretsDir
		if dir == "" {
			dir = "<state dir>/secrets/" + q.app.Name
		}
		var cmds []string
		for _, s := range q.app.Secrets {
			cmds = append(cmds, fmt.Sprintf("podman secret create %s %s", q.secretName(s.Name), filepath.Join(dir, s.Name)))
		}
		q.note("x-outpost.secrets", "the units use Podman secrets; create them first as the user that runs the units: %s", strings.Join(cmds, "; "))
	}
	var units []string
	for _, name := range q.app.ServiceNames() {
		units = append(units, q.unit(name)+".service")
	}
	q.note("quadlet", "copy the files to ~/.config/containers/systemd/ (rootless) or /etc/containers/systemd/, run `systemctl --user daemon-reload`, then `systemctl --user start %s` (each unit also starts at boot: WantedBy=default.target); the units need Podman 5 (Debian 12's Podman 4.3 has no Quadlet)", strings.Join(units, " "))
}

// unit is the Quadlet unit name (file name without suffix) of a service.
func (q *quadlet) unit(service string) string { return kubeName(q.app.Name + "-" + service) }

func (q *quadlet) jobUnit(job string) string { return kubeName(q.app.Name + "-job-" + job) }

func (q *quadlet) secretName(secret string) string { return kubeName(q.app.Name + "-" + secret) }

func (q *quadlet) networkUnit(key string) string { return kubeName(q.app.Name + "-" + key) }

func (q *quadlet) add(name string, uf *parser.UnitFile) {
	text, err := uf.ToString()
	if err != nil {
		q.err = cmp.Or(q.err, fmt.Errorf("writing unit %s: %w", name, err))
		return
	}
	sum := sha256.Sum256([]byte(text))
	header := fmt.Sprintf("# Written by `outpost export quadlet` for %s; see docs/export.md. %s%s\n",
		strings.TrimSpace(q.app.Name+" "+q.app.Version), pristineMark, hex.EncodeToString(sum[:]))
	q.files = append(q.files, QuadletFile{Name: name, Content: header + text})
}

// pristineMark precedes, on a unit's first line, the sha256 of the rest.
const pristineMark = "body sha256:"

// Pristine reports whether data is a unit file as an export wrote it: its
// first line carries the sha256 of the rest, and the rest still has it. A
// new export may replace such a file; an edited one is the operator's.
func Pristine(data []byte) bool {
	first, rest, ok := strings.Cut(string(data), "\n")
	if !ok || !strings.HasPrefix(first, "# Written by `outpost export quadlet`") {
		return false
	}
	i := strings.LastIndex(first, pristineMark)
	if i < 0 {
		return false
	}
	sum := sha256.Sum256([]byte(rest))
	return first[i+len(pristineMark):] == hex.EncodeToString(sum[:])
}

func (q *quadlet) network(n *model.Network) {
	uf := parser.NewUnitFile()
	uf.Add("Unit", "Description", fmt.Sprintf("%s network %s", q.app.Name, n.Key))
	if n.External {
		q.note("networks."+n.Key, "external: no unit is written; the containers join network %s, which must exist", n.Name)
		return
	}
	uf.Add("Network", "NetworkName", q.networkUnit(n.Key))
	if n.Internal {
		uf.Add("Network", "Internal", "true")
	}
	uf.Add("Network", "Label", "app.kubernetes.io/part-of="+kubeName(q.app.Name))
	q.add(q.networkUnit(n.Key)+".network", uf)
}

func (q *quadlet) volume(v *model.Volume) {
	switch {
	case v.External:
		q.note("volumes."+v.Key, "external: no unit is written; the containers mount Podman volume %s, which must exist", v.Name)
		return
	case v.Legacy:
		q.note("volumes."+v.Key, "legacy: kept only for an Outpost rollback; not exported")
		return
	}
	uf := parser.NewUnitFile()
	uf.Add("Unit", "Description", fmt.Sprintf("%s volume %s", q.app.Name, v.Key))
	uf.Add("Volume", "VolumeName", ClaimName(q.app, v.Key))
	uf.Add("Volume", "Label", "app.kubernetes.io/part-of="+kubeName(q.app.Name))
	q.add(ClaimName(q.app, v.Key)+".volume", uf)
}

// systemdValue escapes what systemd would expand in a command line.
func systemdValue(s string) string {
	return strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
}

func systemdValues(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = systemdValue(s)
	}
	return out
}

// container writes the unit of a service, or of job j in svc's image.
func (q *quadlet) container(svc *model.Service, j *model.Job) error {
	where := "services." + svc.Name
	unit := q.unit(svc.Name)
	if j != nil {
		where, unit = "x-outpost.jobs."+j.Name, q.jobUnit(j.Name)
	}
	uf := parser.NewUnitFile()
	const c = "Container"
	if j != nil {
		uf.Add("Unit", "Description", fmt.Sprintf("%s job %s", q.app.Name, j.Name))
	} else {
		uf.Add("Unit", "Description", fmt.Sprintf("%s service %s", q.app.Name, svc.Name))
	}
	uf.Add(c, "ContainerName", unit)
	uf.Add(c, "Image", svc.Image)
	uf.Add(c, "Label", "app.kubernetes.io/part-of="+kubeName(q.app.Name))
	if svc.Entrypoint != nil {
		if len(svc.Entrypoint) == 0 {
			q.note(where+".entrypoint", "an empty entrypoint cannot be written; the image's runs")
		} else {
			b, _ := json.Marshal(svc.Entrypoint)
			uf.Add(c, "Entrypoint", systemdValue(string(b)))
		}
	}
	args := svc.Command
	if j != nil {
		args = j.Command
	}
	if len(args) > 0 {
		uf.AddCmdline(c, "Exec", systemdValues(args))
	}
	if err := q.environment(uf, svc, where); err != nil {
		return err
	}
	q.networks(uf, svc, j == nil, where)
	q.mounts(uf, svc, where)
	if j == nil {
		for _, p := range svc.Ports {
			spec := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Protocol)
			if p.HostPort == 0 {
				spec = fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
			}
			if p.HostIP != "" {
				spec = p.HostIP + ":" + spec
			}
			uf.Add(c, "PublishPort", spec)
		}
		q.health(uf, svc, where)
	}
	q.settings(uf, svc, where)
	q.ordering(uf, svc, j)
	service := "Service"
	switch {
	case j != nil:
		uf.Add(service, "Type", "oneshot")
		uf.Add(service, "RemainAfterExit", "yes")
		if j.Timeout > 0 {
			uf.Add(service, "TimeoutStartSec", fmt.Sprint(int64((j.Timeout+time.Second-1)/time.Second)))
		}
		if j.When != model.JobAlways {
			q.note(where+".when", "%s: the job runs on every start of its unit (Outpost runs it only at %s)", j.When, j.When)
		}
	default:
		switch svc.Restart {
		case model.RestartNo:
			uf.Add(service, "Restart", "no")
		case model.RestartOnFailure:
			uf.Add(service, "Restart", "on-failure")
		default:
			uf.Add(service, "Restart", "always")
		}
		uf.Add(service, "TimeoutStartSec", fmt.Sprint(startTimeout(svc)))
	}
	uf.Add("Install", "WantedBy", "default.target")
	q.add(unit+".container", uf)
	return nil
}

// startTimeout is how long systemd waits for the unit to turn healthy:
// the start period, then the retries at the interval, with a margin.
func startTimeout(svc *model.Service) int64 {
	d := 90 * time.Second
	if hc := svc.Healthcheck; hc != nil {
		interval := hc.Interval
		if interval <= 0 {
			interval = model.DefaultHealthInterval
		}
		retries := hc.Retries
		if retries <= 0 {
			retries = model.DefaultHealthRetries
		}
		d = max(d, hc.StartPeriod+time.Duration(retries+1)*interval+60*time.Second)
	}
	return int64(d / time.Second)
}

func (q *quadlet) environment(uf *parser.UnitFile, svc *model.Service, where string) error {
	secretEnv, err := secretEnvs(q.app, svc, where)
	if err != nil {
		return err
	}
	for _, k := range sortedKeys(svc.Environment) {
		if _, ok := secretEnv[k]; ok {
			continue
		}
		uf.AddCmdline("Container", "Environment", []string{k + "=" + systemdValue(svc.Environment[k])})
	}
	for _, k := range sortedKeys(secretEnv) {
		uf.Add("Container", "Secret", fmt.Sprintf("%s,type=env,target=%s", q.secretName(secretEnv[k]), k))
	}
	return nil
}

func (q *quadlet) networks(uf *parser.UnitFile, svc *model.Service, aliases bool, where string) {
	nets := svc.Networks
	if len(nets) == 0 {
		nets = map[string][]string{"default": nil}
	}
	for _, key := range sortedKeys(nets) {
		n, ok := q.app.Networks[key]
		switch {
		case !ok:
			q.note(where+".networks."+key, "not a network of the appliance; left out")
			continue
		case n.External:
			uf.Add("Container", "Network", n.Name)
		default:
			uf.Add("Container", "Network", q.networkUnit(key)+".network")
		}
	}
	if !aliases {
		return
	}
	// The Compose name and aliases, as Outpost gives them on every network.
	names := []string{svc.Name}
	for _, key := range sortedKeys(nets) {
		for _, a := range nets[key] {
			if !slices.Contains(names, a) {
				names = append(names, a)
			}
		}
	}
	for _, a := range names {
		uf.Add("Container", "NetworkAlias", a)
	}
}

func (q *quadlet) mounts(uf *parser.UnitFile, svc *model.Service, where string) {
	for i, m := range svc.Mounts {
		ro := ""
		if m.ReadOnly {
			ro = ":ro"
		}
		switch m.Type {
		case model.MountVolume:
			v, ok := q.app.Volumes[m.Source]
			switch {
			case !ok:
				uf.Add("Container", "Volume", m.Target+ro)
			case v.Legacy:
				q.note(fmt.Sprintf("%s.volumes[%d]", where, i), "mounts legacy volume %s, which is not exported; the mount is left out", m.Source)
			case v.External:
				uf.Add("Container", "Volume", v.Name+":"+m.Target+ro)
			default:
				uf.Add("Container", "Volume", ClaimName(q.app, m.Source)+".volume:"+m.Target+ro)
			}
		case model.MountBind:
			uf.Add("Container", "Volume", systemdValue(m.Source)+":"+m.Target+ro)
		case model.MountTmpfs:
			opt := m.Target
			if m.TmpfsSize > 0 {
				opt += fmt.Sprintf(":size=%d", m.TmpfsSize)
			}
			uf.Add("Container", "Tmpfs", opt)
		}
	}
}

// health maps the Compose healthcheck; Notify=healthy makes the unit
// active only once healthy, so After= on it waits for service_healthy.
func (q *quadlet) health(uf *parser.UnitFile, svc *model.Service, where string) {
	hc := svc.Healthcheck
	if hc == nil {
		q.markersWithoutHealthcheck(svc, where)
		return
	}
	const c = "Container"
	switch {
	case len(hc.Test) > 1 && hc.Test[0] == "CMD":
		b, _ := json.Marshal(hc.Test[1:])
		uf.Add(c, "HealthCmd", systemdValue(string(b)))
	case len(hc.Test) == 2 && hc.Test[0] == "CMD-SHELL":
		// Quadlet passes the value on as one word, which podman runs
		// with /bin/sh -c.
		uf.Add(c, "HealthCmd", systemdValue(hc.Test[1]))
	default:
		q.note(where+".healthcheck", "test %q is not exported", hc.Test)
		return
	}
	if hc.Interval > 0 {
		uf.Add(c, "HealthInterval", hc.Interval.String())
	}
	if hc.Timeout > 0 {
		uf.Add(c, "HealthTimeout", hc.Timeout.String())
	}
	if hc.Retries > 0 {
		uf.Add(c, "HealthRetries", fmt.Sprint(hc.Retries))
	}
	if hc.StartPeriod > 0 {
		uf.Add(c, "HealthStartPeriod", hc.StartPeriod.String())
	}
	uf.Add(c, "HealthOnFailure", "kill")
	uf.Add(c, "Notify", "healthy")
	if len(svc.ReadyMarkers) > 0 {
		q.note(where+".ready_markers", "exported only as far as the healthcheck tests them")
	}
}

func (q *quadlet) settings(uf *parser.UnitFile, svc *model.Service, where string) {
	const c = "Container"
	if svc.User != "" {
		user, group, _ := strings.Cut(svc.User, ":")
		uf.Add(c, "User", user)
		if group != "" {
			uf.Add(c, "Group", group)
		}
	}
	if svc.WorkingDir != "" {
		uf.Add(c, "WorkingDir", svc.WorkingDir)
	}
	if svc.Hostname != "" {
		uf.Add(c, "HostName", svc.Hostname)
	}
	for _, h := range svc.ExtraHosts {
		uf.Add(c, "AddHost", h)
	}
	if svc.ReadOnly {
		uf.Add(c, "ReadOnly", "true")
	}
	for _, cp := range svc.CapAdd {
		uf.Add(c, "AddCapability", strings.ToUpper(cp))
	}
	for _, cp := range svc.CapDrop {
		uf.Add(c, "DropCapability", strings.ToUpper(cp))
	}
	if svc.Init {
		uf.Add(c, "RunInit", "true")
	}
	if svc.ShmSize > 0 {
		uf.Add(c, "ShmSize", fmt.Sprint(svc.ShmSize))
	}
	if svc.MemLimit > 0 {
		uf.Add(c, "Memory", fmt.Sprint(svc.MemLimit))
	}
	if svc.PidsLimit > 0 {
		uf.Add(c, "PidsLimit", fmt.Sprint(svc.PidsLimit))
	}
	for _, name := range sortedKeys(svc.Ulimits) {
		u := svc.Ulimits[name]
		uf.Add(c, "Ulimit", fmt.Sprintf("%s=%d:%d", name, u.Soft, u.Hard))
	}
	if svc.StopSignal != "" {
		uf.Add(c, "StopSignal", svc.StopSignal)
	}
	if svc.StopGracePeriod > 0 {
		uf.Add(c, "StopTimeout", fmt.Sprint(int64((svc.StopGracePeriod+time.Second-1)/time.Second)))
	}
	for _, k := range sortedKeys(svc.Labels) {
		uf.AddCmdline(c, "Label", []string{k + "=" + systemdValue(svc.Labels[k])})
	}
}

// ordering turns depends_on (and a job's after/before) into systemd
// dependencies: a required one is Requires= + After=, an optional one
// Wants= + After=. A healthy dependency is one whose unit is active, as
// Notify=healthy makes it; a completed job is a oneshot unit that exited.
func (q *quadlet) ordering(uf *parser.UnitFile, svc *model.Service, j *model.Job) {
	dep := func(name string, required bool) {
		u := q.unit(name)
		if slices.ContainsFunc(q.app.Jobs, func(o *model.Job) bool { return o.Name == name }) {
			u = q.jobUnit(name)
		}
		if p := q.app.Proxy; p != nil && p.Replaced == nil && name == p.Service {
			return
		}
		if required {
			uf.Add("Unit", "Requires", u+".service")
		} else {
			uf.Add("Unit", "Wants", u+".service")
		}
		uf.Add("Unit", "After", u+".service")
	}
	if j != nil {
		for _, a := range j.After {
			dep(a, true)
		}
		return
	}
	for _, name := range sortedKeys(svc.DependsOn) {
		dep(name, svc.DependsOn[name].Required)
	}
	// Jobs that must complete before this service.
	for _, o := range q.app.Jobs {
		if slices.Contains(o.Before, svc.Name) {
			if _, listed := svc.DependsOn[o.Name]; !listed {
				dep(o.Name, true)
			}
		}
	}
}
