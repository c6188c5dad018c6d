// Package export writes an appliance definition for runtimes other than
// Outpost: Kubernetes manifests for clusters, and manifests that
// `podman kube play` runs on one box without Outpost. The manifests are
// built from Podman's copy of the Kubernetes API types, the ones its
// `kube play` decodes, and marshalled with sigs.k8s.io/yaml.
//
// What has no Kubernetes counterpart (the embedded proxy, ready markers
// outside a healthcheck, ulimits, depends_on ordering, ...) is left out
// and reported as a Note, never dropped silently.
package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	apps "github.com/containers/podman/v5/pkg/k8s.io/api/apps/v1"
	core "github.com/containers/podman/v5/pkg/k8s.io/api/core/v1"
	"github.com/containers/podman/v5/pkg/k8s.io/apimachinery/pkg/api/resource"
	meta "github.com/containers/podman/v5/pkg/k8s.io/apimachinery/pkg/apis/meta/v1"
	"github.com/containers/podman/v5/pkg/k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/outpostdev/outpost/appliance/model"
)

// Target selects what the manifests are for.
type Target string

// Targets.
const (
	// TargetKubernetes writes a Deployment and a Service per service (the
	// Service gives it its Compose name in cluster DNS), a
	// PersistentVolumeClaim per volume, a Job per x-outpost job, and
	// secrets as references to one Secret.
	TargetKubernetes Target = "kubernetes"
	// TargetPodman writes what `podman kube play` (4.3 and later) runs: a
	// Pod per service, named after it, because Podman resolves pods by
	// their names on a network with DNS (it ignores Service objects);
	// published ports as host ports; jobs as pods restarted until they
	// succeed; secret values inline.
	TargetPodman Target = "podman"
)

// Options configure Kube.
type Options struct {
	// Target defaults to TargetKubernetes.
	Target Target
	// Namespace is written into every object's metadata; empty: none.
	Namespace string
	// SecretValues are the values of the appliance's secrets by name. With
	// TargetKubernetes they fill a Secret object (nil: the Secret is only
	// referenced, and a Note says how to create it); TargetPodman needs
	// them, as it writes them into the environment.
	SecretValues map[string]string
	// SecretsDir is where the secret files are, for the note on how to
	// create the Secret; empty: a placeholder.
	SecretsDir string
	// StorageRequest is each PersistentVolumeClaim's size request;
	// default 1Gi.
	StorageRequest string
}

// Note is one thing the manifests do not carry over, or that the operator
// must do, with where it comes from.
type Note struct {
	// Where names the Compose or x-outpost field, e.g. "services.db.ulimits".
	Where string
	// What says what happens to it and what to do.
	What string
}

func (n Note) String() string { return n.Where + ": " + n.What }

// SecretName is the Secret object that holds an appliance's secret values
// (keys: the x-outpost secret names).
func SecretName(app *model.Appliance) string { return kubeName(app.Name) + "-secrets" }

// ClaimName is the PersistentVolumeClaim (with `podman kube play`: the
// Podman volume) of a Compose volume. It differs from the volume Outpost
// itself uses (<appliance>_<key>), so playing an export beside an Outpost
// installation never touches that installation's data. An external
// volume keeps its own name: it is the operator's, made beforehand.
func ClaimName(app *model.Appliance, key string) string {
	if v, ok := app.Volumes[key]; ok && v.External {
		return kubeName(v.Name)
	}
	return kubeName(app.Name + "-" + key)
}

// Kube returns app as a multi-document YAML stream of Kubernetes objects,
// in a stable order, and the notes on what it could not carry over.
func Kube(app *model.Appliance, opts Options) ([]byte, []Note, error) {
	if opts.Target == "" {
		opts.Target = TargetKubernetes
	}
	if opts.Target != TargetKubernetes && opts.Target != TargetPodman {
		return nil, nil, fmt.Errorf("export target %q: use %q or %q", opts.Target, TargetKubernetes, TargetPodman)
	}
	if opts.StorageRequest == "" {
		opts.StorageRequest = "1Gi"
	}
	storage, err := resource.ParseQuantity(opts.StorageRequest)
	if err != nil {
		return nil, nil, fmt.Errorf("storage request %q: %w (use e.g. 10Gi)", opts.StorageRequest, err)
	}
	if opts.Namespace != "" && !dnsLabel.MatchString(opts.Namespace) {
		return nil, nil, fmt.Errorf("namespace %q is not a valid Kubernetes name (lower-case letters, digits and '-', at most 63)", opts.Namespace)
	}
	x := &exporter{app: app, opts: opts, storage: storage}
	if err := x.checkSecrets(); err != nil {
		return nil, nil, err
	}
	x.appNotes()
	x.volumes()
	x.secret()
	for _, name := range app.ServiceNames() {
		if err := x.service(app.Services[name]); err != nil {
			return nil, nil, err
		}
	}
	if p := app.Proxy; p != nil && p.Replaced != nil {
		if err := x.service(p.Replaced); err != nil {
			return nil, nil, err
		}
	}
	for _, j := range app.Jobs {
		if err := x.job(j); err != nil {
			return nil, nil, err
		}
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# %s exported by outpost for %s; see docs/export.md for what is and is not carried over.\n", strings.TrimSpace(app.Name+" "+app.Version), opts.Target)
	for _, o := range x.objects {
		b, err := encode(o)
		if err != nil {
			return nil, nil, err
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes(), x.notes, nil
}

type exporter struct {
	noter
	app     *model.Appliance
	opts    Options
	storage resource.Quantity
	objects []any
}

func (x *exporter) podman() bool { return x.opts.Target == TargetPodman }

func (x *exporter) checkSecrets() error {
	if !x.podman() || len(x.app.Secrets) == 0 {
		return nil
	}
	for _, s := range x.app.Secrets {
		if _, ok := x.opts.SecretValues[s.Name]; !ok {
			return fmt.Errorf("x-outpost.secrets.%s: the podman target writes secret values into the pods' environment and needs them: pass --with-secrets (reads them from the state directory of an installed appliance)", s.Name)
		}
	}
	return nil
}

func (x *exporter) appNotes() {
	x.proxyNote(x.app, "put an Ingress or a proxy of your own")
	for _, key := range sortedKeys(x.app.Networks) {
		n := x.app.Networks[key]
		if n.Internal {
			x.note("networks."+key, "internal: not exported; every pod can reach every other (add a NetworkPolicy to restrict it)")
		}
	}
	if len(x.app.VolumeMigrations) > 0 {
		x.note("x-outpost.volumes.migrations", "not exported: they are an Outpost upgrade step; the manifests use the volumes of this definition as they are")
	}
	if x.app.Backup != nil {
		x.note("x-outpost.backup", "the snapshot schedule is not exported; back up the PersistentVolumes with your cluster's tools")
	}
	if x.podman() {
		x.note("podman", "play on a network with DNS, so that services find each other by name: `podman network create NET && podman kube play --network NET FILE`; pods are named after the services, so play one appliance per user")
	}
}

func (x *exporter) meta(name string, extra map[string]string) meta.ObjectMeta {
	return meta.ObjectMeta{Name: name, Namespace: x.opts.Namespace, Labels: x.labels(extra)}
}

// labels are the appliance's labels (part-of, version) and extra.
func (x *exporter) labels(extra map[string]string) map[string]string {
	labels := map[string]string{
		"app.kubernetes.io/part-of": kubeName(x.app.Name),
	}
	if x.app.Version != "" && labelValue.MatchString(x.app.Version) {
		labels["app.kubernetes.io/version"] = x.app.Version
	}
	maps.Copy(labels, extra)
	return labels
}

func (x *exporter) volumes() {
	for _, key := range sortedKeys(x.app.Volumes) {
		v := x.app.Volumes[key]
		if v.External {
			x.note("volumes."+key, "external: no claim is written; create a PersistentVolumeClaim named %s before applying", ClaimName(x.app, key))
			continue
		}
		if v.Legacy {
			x.note("volumes."+key, "legacy: kept only for an Outpost rollback; not exported")
			continue
		}
		x.objects = append(x.objects, &core.PersistentVolumeClaim{
			TypeMeta:   meta.TypeMeta{APIVersion: "v1", Kind: "PersistentVolumeClaim"},
			ObjectMeta: x.meta(ClaimName(x.app, key), nil),
			Spec: core.PersistentVolumeClaimSpec{
				AccessModes: []core.PersistentVolumeAccessMode{core.ReadWriteOnce},
				Resources:   core.ResourceRequirements{Requests: core.ResourceList{core.ResourceStorage: x.storage}},
			},
		})
	}
}

func (x *exporter) secret() {
	if len(x.app.Secrets) == 0 || x.podman() {
		return
	}
	if x.opts.SecretValues == nil {
		dir := x.opts.SecretsDir
		if dir == "" {
			dir = "<state dir>/secrets/" + x.app.Name
		}
		var files []string
		for _, s := range x.app.Secrets {
			files = append(files, "--from-file="+s.Name+"="+filepath.Join(dir, s.Name))
		}
		x.note("x-outpost.secrets", "the values are not written; create Secret %s first: `kubectl create secret generic %s %s` (or export again with --with-secrets)",
			SecretName(x.app), SecretName(x.app), strings.Join(files, " "))
		return
	}
	data := make(map[string]string, len(x.app.Secrets))
	for _, s := range x.app.Secrets {
		data[s.Name] = x.opts.SecretValues[s.Name]
	}
	x.objects = append(x.objects, &core.Secret{
		TypeMeta:   meta.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: x.meta(SecretName(x.app), nil),
		Type:       core.SecretType("Opaque"),
		StringData: data,
	})
}

// selector is the label that ties a service's pods to its Service.
func selector(svc string) map[string]string {
	return map[string]string{"app.kubernetes.io/name": kubeName(svc)}
}

func (x *exporter) service(svc *model.Service) error {
	name := kubeName(svc.Name)
	if name != svc.Name {
		x.note("services."+svc.Name, "not a valid Kubernetes name; exported as %s, so references to %s (in environment values, say) need the new name", name, svc.Name)
	}
	pod, err := x.podSpec(svc, svc.Command, "services."+svc.Name)
	if err != nil {
		return err
	}
	labels := selector(svc.Name)
	annotations := map[string]string{"outpost.dev/role": string(svc.Role)}
	if x.podman() {
		x.publishPorts(svc, pod)
		pod.RestartPolicy = restartPolicy(svc.Restart)
		m := x.meta(name, labels)
		m.Annotations = annotations
		x.objects = append(x.objects, &core.Pod{TypeMeta: meta.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: m, Spec: *pod})
		return nil
	}
	if svc.Restart == model.RestartNo || svc.Restart == model.RestartOnFailure {
		x.note("services."+svc.Name+".restart", "%s: a Deployment always restarts its pod", svc.Restart)
	}
	for _, p := range svc.Ports {
		if p.HostPort != 0 {
			x.note("services."+svc.Name+".ports", "host port %d is not published; the Service %s exposes container port %d in the cluster (use a NodePort or LoadBalancer Service, or an Ingress, to reach it from outside)", p.HostPort, name, p.ContainerPort)
		}
	}
	strategy := apps.DeploymentStrategy{Type: apps.RecreateDeploymentStrategyType}
	if svc.Role == model.RoleRotatable {
		zero, one := intstr.FromInt(0), intstr.FromInt(1)
		strategy = apps.DeploymentStrategy{Type: apps.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &apps.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: &one}}
	}
	replicas := int32(1)
	dm := x.meta(name, labels)
	dm.Annotations = annotations
	x.objects = append(x.objects, &apps.Deployment{
		TypeMeta:   meta.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: dm,
		Spec: apps.DeploymentSpec{
			Replicas: &replicas,
			Selector: &meta.LabelSelector{MatchLabels: labels},
			Strategy: strategy,
			Template: core.PodTemplateSpec{ObjectMeta: meta.ObjectMeta{Labels: x.labels(labels)}, Spec: *pod},
		},
	})
	// A headless Service per name: cluster DNS then resolves the Compose
	// name to the pod itself, every port reachable, as on a Compose
	// network; the ports listed are the ones known (published, or routed
	// to by the proxy).
	ports := x.servicePorts(svc)
	names := []string{name}
	for _, key := range sortedKeys(svc.Networks) {
		for _, alias := range svc.Networks[key] {
			a := kubeName(alias)
			if a != alias {
				x.note("services."+svc.Name+".networks."+key+".aliases", "%s is not a valid Kubernetes name; no Service is written for it", alias)
				continue
			}
			if !slices.Contains(names, a) {
				names = append(names, a)
			}
		}
	}
	for _, n := range names {
		x.objects = append(x.objects, &core.Service{
			TypeMeta:   meta.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: x.meta(n, labels),
			Spec:       core.ServiceSpec{ClusterIP: core.ClusterIPNone, Selector: labels, Ports: ports},
		})
	}
	return nil
}

// servicePorts are the container ports known to be served: the
// published ones, and those the proxy's routes send to.
func (x *exporter) servicePorts(svc *model.Service) []core.ServicePort {
	seen := map[string]bool{}
	var out []core.ServicePort
	add := func(port uint16, proto core.Protocol) {
		k := fmt.Sprint(port, proto)
		if seen[k] {
			return
		}
		seen[k] = true
		out = append(out, core.ServicePort{
			Name:       strings.ToLower(fmt.Sprintf("%s-%d", proto, port)),
			Protocol:   proto,
			Port:       int32(port),
			TargetPort: intstr.FromInt(int(port)),
		})
	}
	for _, p := range svc.Ports {
		proto := core.ProtocolTCP
		if p.Protocol == "udp" {
			proto = core.ProtocolUDP
		}
		add(p.ContainerPort, proto)
	}
	if x.app.Proxy != nil {
		for _, r := range x.app.Proxy.Routes {
			host, port, ok := strings.Cut(r.Upstream, ":")
			if n, err := strconv.ParseUint(port, 10, 16); ok && err == nil && host == svc.Name {
				add(uint16(n), core.ProtocolTCP)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out
}

func (x *exporter) publishPorts(svc *model.Service, pod *core.PodSpec) {
	c := &pod.Containers[0]
	for i := range c.Ports {
		for _, p := range svc.Ports {
			if int32(p.ContainerPort) == c.Ports[i].ContainerPort && string(c.Ports[i].Protocol) == strings.ToUpper(p.Protocol) && p.HostPort != 0 {
				c.Ports[i].HostPort = int32(p.HostPort)
				c.Ports[i].HostIP = p.HostIP
			}
		}
	}
}

func restartPolicy(r model.RestartPolicy) core.RestartPolicy {
	switch r {
	case model.RestartNo:
		return core.RestartPolicyNever
	case model.RestartOnFailure:
		return core.RestartPolicyOnFailure
	default:
		return core.RestartPolicyAlways
	}
}

// podSpec is the pod of one service (or a job in a service's image).
func (x *exporter) podSpec(svc *model.Service, args []string, where string) (*core.PodSpec, error) {
	c := core.Container{
		Name:       kubeName(svc.Name),
		Image:      svc.Image,
		Command:    svc.Entrypoint,
		Args:       args,
		WorkingDir: svc.WorkingDir,
	}
	if svc.Entrypoint != nil && len(svc.Entrypoint) == 0 {
		x.note(where+".entrypoint", "an empty entrypoint cannot be written (Kubernetes reads it as the image's); the image's entrypoint runs")
	}
	if strings.HasPrefix(svc.Image, "localhost/") && !x.podman() {
		x.note(where+".image", "%s is a local image: push it to a registry the cluster pulls from, or load it onto every node", svc.Image)
	}
	if x.podman() || strings.HasPrefix(svc.Image, "localhost/") {
		c.ImagePullPolicy = core.PullIfNotPresent
	}
	env, err := x.env(svc, where)
	if err != nil {
		return nil, err
	}
	c.Env = env
	for _, p := range svc.Ports {
		proto := core.ProtocolTCP
		if p.Protocol == "udp" {
			proto = core.ProtocolUDP
		}
		cp := core.ContainerPort{ContainerPort: int32(p.ContainerPort), Protocol: proto}
		if !slices.ContainsFunc(c.Ports, func(o core.ContainerPort) bool {
			return o.ContainerPort == cp.ContainerPort && o.Protocol == cp.Protocol
		}) {
			c.Ports = append(c.Ports, cp)
		}
	}
	pod := &core.PodSpec{Hostname: svc.Hostname}
	x.mounts(svc, &c, pod, where)
	x.security(svc, &c, where)
	x.probes(svc, &c, where)
	if svc.MemLimit > 0 {
		c.Resources.Limits = core.ResourceList{core.ResourceMemory: *resource.NewQuantity(svc.MemLimit, resource.BinarySI)}
	}
	if svc.PidsLimit > 0 {
		x.note(where+".pids_limit", "not expressible per container in Kubernetes; set the kubelet's podPidsLimit")
	}
	if len(svc.Ulimits) > 0 {
		x.note(where+".ulimits", "not expressible in Kubernetes; they come from the node's container runtime")
	}
	if svc.Init {
		x.note(where+".init", "not expressible in Kubernetes; use an image whose entrypoint reaps children (tini)")
	}
	if svc.StopSignal != "" && svc.StopSignal != "SIGTERM" {
		x.note(where+".stop_signal", "%s: Kubernetes always sends SIGTERM (or the image's STOPSIGNAL)", svc.StopSignal)
	}
	if len(svc.DependsOn) > 0 && !x.podman() {
		x.note(where+".depends_on", "Kubernetes starts every pod at once: %s must retry until each of %s answers; its probes keep it out of service until then", svc.Name, strings.Join(sortedKeys(svc.DependsOn), ", "))
	}
	grace := int64((svc.StopGracePeriod + time.Second - 1) / time.Second)
	if grace > 0 && svc.StopGracePeriod != 30*time.Second {
		pod.TerminationGracePeriodSeconds = &grace
	}
	for _, h := range svc.ExtraHosts {
		host, ip, ok := strings.Cut(h, ":")
		if !ok || ip == "host-gateway" {
			x.note(where+".extra_hosts", "%s: not exported (the host's address depends on the node)", h)
			continue
		}
		i := slices.IndexFunc(pod.HostAliases, func(a core.HostAlias) bool { return a.IP == ip })
		if i < 0 {
			pod.HostAliases = append(pod.HostAliases, core.HostAlias{IP: ip})
			i = len(pod.HostAliases) - 1
		}
		pod.HostAliases[i].Hostnames = append(pod.HostAliases[i].Hostnames, host)
	}
	pod.Containers = []core.Container{c}
	return pod, nil
}

// env is the service's environment, sorted, with secrets as references
// to the Secret (kubernetes) or inline (podman). A literal "$(" is
// written "$$(": Kubernetes would otherwise expand it.
func (x *exporter) env(svc *model.Service, where string) ([]core.EnvVar, error) {
	secretEnv, err := secretEnvs(x.app, svc, where)
	if err != nil {
		return nil, err
	}
	var out []core.EnvVar
	for _, k := range sortedKeys(svc.Environment) {
		if _, ok := secretEnv[k]; ok {
			continue
		}
		out = append(out, core.EnvVar{Name: k, Value: strings.ReplaceAll(svc.Environment[k], "$(", "$$(")})
	}
	for _, k := range sortedKeys(secretEnv) {
		sn := secretEnv[k]
		if x.podman() {
			out = append(out, core.EnvVar{Name: k, Value: strings.ReplaceAll(x.opts.SecretValues[sn], "$(", "$$(")})
			continue
		}
		out = append(out, core.EnvVar{Name: k, ValueFrom: &core.EnvVarSource{
			SecretKeyRef: &core.SecretKeySelector{LocalObjectReference: core.LocalObjectReference{Name: SecretName(x.app)}, Key: sn},
		}})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (x *exporter) mounts(svc *model.Service, c *core.Container, pod *core.PodSpec, where string) {
	add := func(v core.Volume) string {
		for _, o := range pod.Volumes {
			if o.Name == v.Name {
				return v.Name
			}
		}
		pod.Volumes = append(pod.Volumes, v)
		return v.Name
	}
	for i, m := range svc.Mounts {
		var vname string
		switch m.Type {
		case model.MountVolume:
			v, ok := x.app.Volumes[m.Source]
			if !ok {
				x.note(fmt.Sprintf("%s.volumes[%d]", where, i), "anonymous volume at %s: exported as an emptyDir (its data lives as long as the pod)", m.Target)
				vname = add(core.Volume{Name: fmt.Sprintf("anon-%d", i), VolumeSource: core.VolumeSource{EmptyDir: &core.EmptyDirVolumeSource{}}})
				break
			}
			if v.Legacy {
				x.note(fmt.Sprintf("%s.volumes[%d]", where, i), "mounts legacy volume %s, which is not exported; the mount is left out", m.Source)
				continue
			}
			vname = add(core.Volume{Name: kubeName(m.Source), VolumeSource: core.VolumeSource{
				PersistentVolumeClaim: &core.PersistentVolumeClaimVolumeSource{ClaimName: ClaimName(x.app, m.Source)}}})
		case model.MountBind:
			if text, ok := x.caddyfile(m); ok && !x.podman() {
				// The proxy's Caddyfile, {$VAR}s resolved, from a ConfigMap.
				cm := kubeName(x.app.Name + "-caddyfile")
				x.objects = append(x.objects, &core.ConfigMap{
					TypeMeta:   meta.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
					ObjectMeta: x.meta(cm, nil),
					Data:       map[string]string{"Caddyfile": text},
				})
				vname = add(core.Volume{Name: "caddyfile", VolumeSource: core.VolumeSource{ConfigMap: &core.ConfigMapVolumeSource{
					LocalObjectReference: core.LocalObjectReference{Name: cm}}}})
				c.VolumeMounts = append(c.VolumeMounts, core.VolumeMount{Name: vname, MountPath: m.Target, SubPath: "Caddyfile", ReadOnly: true})
				continue
			}
			if !x.podman() {
				x.note(fmt.Sprintf("%s.volumes[%d]", where, i), "bind mount of %s written as a hostPath: the path must exist on whichever node runs the pod", m.Source)
			}
			vname = add(core.Volume{Name: fmt.Sprintf("host-%d", i), VolumeSource: core.VolumeSource{HostPath: &core.HostPathVolumeSource{Path: m.Source}}})
		case model.MountTmpfs:
			ed := &core.EmptyDirVolumeSource{Medium: core.StorageMediumMemory}
			if m.TmpfsSize > 0 {
				ed.SizeLimit = resource.NewQuantity(m.TmpfsSize, resource.BinarySI)
			}
			vname = add(core.Volume{Name: fmt.Sprintf("tmpfs-%d", i), VolumeSource: core.VolumeSource{EmptyDir: ed}})
		}
		c.VolumeMounts = append(c.VolumeMounts, core.VolumeMount{Name: vname, MountPath: m.Target, ReadOnly: m.ReadOnly})
	}
	if svc.ShmSize > 0 {
		vname := add(core.Volume{Name: "shm", VolumeSource: core.VolumeSource{EmptyDir: &core.EmptyDirVolumeSource{
			Medium: core.StorageMediumMemory, SizeLimit: resource.NewQuantity(svc.ShmSize, resource.BinarySI)}}})
		c.VolumeMounts = append(c.VolumeMounts, core.VolumeMount{Name: vname, MountPath: "/dev/shm"})
	}
}

// caddyfile returns the captured text of the proxy's Caddyfile when m
// bind-mounts that file (the replaced proxy service of a Caddyfile
// appliance, as Tale's compose.yml mounts it).
func (x *exporter) caddyfile(m model.Mount) (string, bool) {
	p := x.app.Proxy
	if p == nil || p.Caddyfile == "" || p.CaddyfileText == "" {
		return "", false
	}
	return p.CaddyfileText, filepath.Clean(x.app.ResolvePath(p.Caddyfile)) == filepath.Clean(m.Source)
}

var numericUser = regexp.MustCompile(`^([0-9]+)(?::([0-9]+))?$`)

func (x *exporter) security(svc *model.Service, c *core.Container, where string) {
	sc := &core.SecurityContext{}
	set := false
	if svc.User != "" {
		if m := numericUser.FindStringSubmatch(svc.User); m != nil {
			uid, _ := strconv.ParseInt(m[1], 10, 64)
			sc.RunAsUser, set = &uid, true
			if m[2] != "" {
				gid, _ := strconv.ParseInt(m[2], 10, 64)
				sc.RunAsGroup = &gid
			}
		} else {
			x.note(where+".user", "%q is a name: Kubernetes takes numeric IDs only; the image's user runs", svc.User)
		}
	}
	if svc.ReadOnly {
		ro := true
		sc.ReadOnlyRootFilesystem, set = &ro, true
	}
	if len(svc.CapAdd) > 0 || len(svc.CapDrop) > 0 {
		sc.Capabilities, set = &core.Capabilities{}, true
		for _, cp := range svc.CapAdd {
			sc.Capabilities.Add = append(sc.Capabilities.Add, core.Capability(strings.TrimPrefix(strings.ToUpper(cp), "CAP_")))
		}
		for _, cp := range svc.CapDrop {
			sc.Capabilities.Drop = append(sc.Capabilities.Drop, core.Capability(strings.TrimPrefix(strings.ToUpper(cp), "CAP_")))
		}
	}
	if set {
		c.SecurityContext = sc
	}
}

// probes maps the Compose healthcheck: readiness (traffic only while
// healthy, as Outpost's proxy does), liveness (a service that turns
// unhealthy, after the healthcheck's retries, is restarted, as Outpost
// does) and, with a start period, a startup probe that holds the other two
// off for that long.
func (x *exporter) probes(svc *model.Service, c *core.Container, where string) {
	hc := svc.Healthcheck
	if hc == nil {
		x.markersWithoutHealthcheck(svc, where)
		return
	}
	var cmd []string
	switch {
	case len(hc.Test) > 1 && hc.Test[0] == "CMD":
		cmd = hc.Test[1:]
	case len(hc.Test) == 2 && hc.Test[0] == "CMD-SHELL":
		cmd = []string{"/bin/sh", "-c", hc.Test[1]}
	default:
		x.note(where+".healthcheck", "test %q is not exported", hc.Test)
		return
	}
	if len(svc.ReadyMarkers) > 0 {
		x.note(where+".ready_markers", "exported only as far as the healthcheck tests them: Kubernetes has no ready markers")
	}
	secs := func(d, def time.Duration) int32 {
		if d <= 0 {
			d = def
		}
		return int32(max(1, (d+time.Second-1)/time.Second))
	}
	retries := int32(hc.Retries)
	if retries <= 0 {
		retries = model.DefaultHealthRetries
	}
	probe := func(failures int32) *core.Probe {
		return &core.Probe{
			Handler:          core.Handler{Exec: &core.ExecAction{Command: slices.Clone(cmd)}},
			PeriodSeconds:    secs(hc.Interval, model.DefaultHealthInterval),
			TimeoutSeconds:   secs(hc.Timeout, model.DefaultHealthTimeout),
			FailureThreshold: failures,
		}
	}
	c.ReadinessProbe = probe(retries)
	c.LivenessProbe = probe(retries)
	if hc.StartPeriod > 0 {
		// Probed every start_interval (else interval) through the start
		// period, after which failures count against the retries.
		sp := probe(0)
		if hc.StartInterval > 0 {
			sp.PeriodSeconds = secs(hc.StartInterval, 0)
		}
		period := time.Duration(sp.PeriodSeconds) * time.Second
		sp.FailureThreshold = int32((hc.StartPeriod+period-1)/period) + retries
		c.StartupProbe = sp
	}
}

func (x *exporter) job(j *model.Job) error {
	svc, err := jobService(x.app, j)
	if err != nil {
		return err
	}
	where := "x-outpost.jobs." + j.Name
	// The job runs in the service's image with its environment and mounts,
	// without its probes and ports.
	js := *svc
	js.Name, js.Healthcheck, js.Ports, js.ReadyMarkers, js.DependsOn = j.Name, nil, nil, nil, nil
	// What the service's own notes say is not said again for the job.
	said := len(x.notes)
	pod, err := x.podSpec(&js, j.Command, where)
	if err != nil {
		return err
	}
	x.notes = x.notes[:said]
	pod.RestartPolicy = core.RestartPolicyOnFailure
	name := kubeName(x.app.Name + "-job-" + j.Name)
	m := x.meta(name, map[string]string{"app.kubernetes.io/component": "job"})
	m.Annotations = map[string]string{"outpost.dev/when": string(j.When)}
	if len(j.After) > 0 {
		x.note(where, "runs at once and is retried until it succeeds (Outpost runs it after %s)", strings.Join(j.After, ", "))
	}
	if x.podman() {
		x.objects = append(x.objects, &core.Pod{TypeMeta: meta.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: m, Spec: *pod})
		return nil
	}
	if j.When != model.JobAlways {
		x.note(where+".when", "%s: the Job runs whenever the manifests are applied; delete it once done, or run it from your deployment tooling at %s", j.When, j.When)
	}
	backoff := int32(6)
	x.objects = append(x.objects, &batchJob{
		TypeMeta:   meta.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: m,
		Spec:       batchJobSpec{BackoffLimit: &backoff, Template: core.PodTemplateSpec{ObjectMeta: meta.ObjectMeta{Labels: m.Labels}, Spec: *pod}},
	})
	return nil
}

// batchJob is batch/v1 Job, which Podman's copy of the API lacks; only the
// fields written here.
type batchJob struct {
	meta.TypeMeta   `json:",inline"`
	meta.ObjectMeta `json:"metadata"`
	Spec            batchJobSpec `json:"spec"`
}

type batchJobSpec struct {
	BackoffLimit *int32               `json:"backoffLimit,omitempty"`
	Template     core.PodTemplateSpec `json:"template"`
}

// encode writes one object as YAML without the fields only a cluster
// fills in (status, creationTimestamp) and empty resource requirements.
func encode(o any) ([]byte, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encoding %T: %w", o, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encoding %T: %w", o, err)
	}
	prune(m)
	return yaml.Marshal(m)
}

// prune removes status, null creationTimestamps and empty resources,
// recursively. Other empty objects stay: `emptyDir: {}` means something.
func prune(m map[string]any) {
	delete(m, "status")
	for k, v := range m {
		switch t := v.(type) {
		case nil:
			if k == "creationTimestamp" {
				delete(m, k)
			}
		case map[string]any:
			prune(t)
			if len(t) == 0 && k == "resources" {
				delete(m, k)
			}
		case []any:
			for _, e := range t {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
	notName    = regexp.MustCompile(`[^a-z0-9-]+`)
)

// kubeName turns s into a DNS-1123 label: lower case, other characters
// as '-', at most 63 characters, starting and ending alphanumeric.
func kubeName(s string) string {
	n := notName.ReplaceAllString(strings.ToLower(s), "-")
	if len(n) > 63 {
		n = n[:63]
	}
	n = strings.Trim(n, "-")
	if n == "" {
		n = "x"
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}
