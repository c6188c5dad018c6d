package export_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	apps "github.com/containers/podman/v5/pkg/k8s.io/api/apps/v1"
	core "github.com/containers/podman/v5/pkg/k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/export"
	"github.com/outpostdev/outpost/appliance/model"
	assets "github.com/outpostdev/outpost/embed"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func demo(t *testing.T) *model.Appliance {
	t.Helper()
	data, err := assets.FS.ReadFile(assets.DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	app, _, err := compose.LoadBytes(context.Background(), "demo.yml", data, compose.Options{Environ: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// rich exercises what the demo does not: secrets, a job, every mount
// type, a user, capabilities, aliases, a legacy volume, a CMD-SHELL
// healthcheck, a name Kubernetes does not accept, a "$(" in a value.
func rich() *model.Appliance {
	return &model.Appliance{
		Name: "Tale_App", Version: "1.2.0",
		Secrets: []*model.Secret{{Name: "db-password", Generate: "password", Length: 24, Env: "DB_PASSWORD"}},
		Volumes: map[string]*model.Volume{
			"pgdata":        {Key: "pgdata", Name: "tale_app_pgdata"},
			"platform-data": {Key: "platform-data", Name: "tale_app_platform-data", Legacy: true},
			"shared":        {Key: "shared", Name: "shared", External: true},
		},
		Networks: map[string]*model.Network{
			"default": {Key: "default", Name: "tale_app_default"},
			"backend": {Key: "backend", Name: "tale_app_backend", Internal: true},
		},
		Proxy: &model.Proxy{TLS: model.TLSInternal, Routes: []model.Route{{Path: "/api/*", Upstream: "platform:3000"}, {Upstream: "platform:3001"}}},
		Services: map[string]*model.Service{
			"db": {
				Name: "db", Image: "registry.example.com/tale/db:16", Role: model.RoleStateful,
				Environment: map[string]string{"POSTGRES_USER": "tale", "DB_PASSWORD": "outpost-secret:db-password"},
				Secrets:     []string{"db-password"},
				User:        "999:999",
				Mounts: []model.Mount{
					{Type: model.MountVolume, Source: "pgdata", Target: "/var/lib/postgresql/data"},
					{Type: model.MountVolume, Source: "platform-data", Target: "/old", ReadOnly: true},
					{Type: model.MountTmpfs, Target: "/run/postgresql", TmpfsSize: 64 << 20},
				},
				ShmSize:         256 << 20,
				StopGracePeriod: 60 * time.Second,
				Healthcheck:     &model.Healthcheck{Test: []string{"CMD-SHELL", "pg_isready -U tale"}, Interval: 5 * time.Second, Timeout: 3 * time.Second, StartPeriod: 60 * time.Second, StartInterval: 2 * time.Second, Retries: 5},
				Networks:        map[string][]string{"backend": {"postgres", "Bad_Alias"}},
				Restart:         model.RestartUnlessStopped,
				Ulimits:         map[string]model.Ulimit{"nofile": {Soft: 1024, Hard: 2048}},
			},
			"platform": {
				Name: "platform", Image: "registry.example.com/tale/platform:1.2.0", Role: model.RoleRotatable,
				Entrypoint:  []string{"/entrypoint.sh"},
				Command:     []string{"serve", "--port", "3000"},
				Environment: map[string]string{"DATABASE_URL": "postgres://tale@db/tale", "TEMPLATE": "hello $(NAME)", "DB_PASSWORD": "outpost-secret:db-password"},
				Secrets:     []string{"db-password"},
				User:        "app",
				ReadOnly:    true, CapDrop: []string{"ALL"}, CapAdd: []string{"cap_net_bind_service"},
				MemLimit: 512 << 20, PidsLimit: 200, Init: true, StopSignal: "SIGINT",
				Ports:           []model.Port{{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 3000, Protocol: "tcp"}, {ContainerPort: 9090, Protocol: "udp"}},
				Mounts:          []model.Mount{{Type: model.MountBind, Source: "/srv/tale/config", Target: "/config", ReadOnly: true}, {Type: model.MountVolume, Source: "shared", Target: "/shared"}, {Type: model.MountVolume, Source: "anon-1", Target: "/cache"}},
				ExtraHosts:      []string{"tale.local:10.0.0.5", "api.tale.local:10.0.0.5", "host.internal:host-gateway"},
				DependsOn:       map[string]model.Dependency{"db": {Condition: model.ConditionHealthy, Required: true}},
				Healthcheck:     &model.Healthcheck{Test: []string{"CMD", "curl", "-fs", "http://127.0.0.1:3000/health"}, Interval: 10 * time.Second, Timeout: 2 * time.Second, Retries: 3},
				ReadyMarkers:    []string{"/tmp/platform-ready"},
				Restart:         model.RestartOnFailure,
				StopGracePeriod: 10 * time.Second,
			},
			"crawler_1": {
				Name: "crawler_1", Image: "localhost/crawler:dev", Role: model.RoleRotatable,
				ReadyMarkers: []string{"/tmp/crawler-ready"}, Restart: model.RestartNo, StopGracePeriod: 30 * time.Second,
			},
		},
		Jobs: []*model.Job{{Name: "migrate", Service: "platform", Command: []string{"migrate", "up"}, After: []string{"db"}, Before: []string{"platform"}, When: model.JobUpgrade}},
	}
}

var secretValues = map[string]string{"db-password": "s3cret-$(not-expanded)"}

func TestKubeGolden(t *testing.T) {
	cases := []struct {
		name string
		app  *model.Appliance
		opts export.Options
	}{
		{"demo-kubernetes", demo(t), export.Options{}},
		{"demo-podman", demo(t), export.Options{Target: export.TargetPodman}},
		{"rich-kubernetes", rich(), export.Options{Namespace: "tale"}},
		{"rich-kubernetes-secrets", rich(), export.Options{SecretValues: secretValues, StorageRequest: "20Gi"}},
		{"rich-podman", rich(), export.Options{Target: export.TargetPodman, SecretValues: secretValues}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, notes, err := export.Kube(c.app, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			var nb strings.Builder
			for _, n := range notes {
				nb.WriteString(n.String() + "\n")
			}
			golden(t, c.name+".golden.yaml", out)
			golden(t, c.name+".notes.golden", []byte(nb.String()))
			checkManifests(t, out, c.opts, notes)
		})
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it); got:\n%s", name, got)
	}
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// checkManifests decodes every document strictly into the API type of its
// kind (an unknown or misspelt field fails) and checks the references
// between them: selectors, claims, secret keys, names.
func checkManifests(t *testing.T, out []byte, opts export.Options, notes []export.Note) {
	t.Helper()
	type head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	var (
		pods       []core.PodSpec
		podLabels  []map[string]string
		services   []core.Service
		claims     = map[string]bool{}
		configMaps = map[string]bool{}
		secretKeys map[string]bool
	)
	// Claims the operator is told to create count as written.
	for _, n := range notes {
		if m := regexp.MustCompile(`create a PersistentVolumeClaim named (\S+) `).FindStringSubmatch(n.What); m != nil {
			claims[m[1]] = true
		}
	}
	for _, doc := range strings.Split(string(out), "\n---\n")[1:] {
		var h head
		if err := yaml.Unmarshal([]byte(doc), &h); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		if !dnsLabel.MatchString(h.Metadata.Name) {
			t.Errorf("%s name %q is not a DNS-1123 label", h.Kind, h.Metadata.Name)
		}
		strict := func(v any) {
			if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
				t.Errorf("%s %s does not decode strictly: %v", h.Kind, h.Metadata.Name, err)
			}
		}
		switch h.Kind {
		case "PersistentVolumeClaim":
			var o core.PersistentVolumeClaim
			strict(&o)
			claims[o.Name] = true
		case "Secret":
			var o core.Secret
			strict(&o)
			secretKeys = map[string]bool{}
			for k, v := range o.StringData {
				secretKeys[k] = true
				if v != opts.SecretValues[k] {
					t.Errorf("secret %s holds %q", k, v)
				}
			}
		case "Deployment":
			var o apps.Deployment
			strict(&o)
			for k, v := range o.Spec.Selector.MatchLabels {
				if o.Spec.Template.Labels[k] != v {
					t.Errorf("deployment %s: selector %s=%s does not match its pod template", o.Name, k, v)
				}
			}
			pods = append(pods, o.Spec.Template.Spec)
			podLabels = append(podLabels, o.Spec.Template.Labels)
		case "Pod":
			var o core.Pod
			strict(&o)
			pods = append(pods, o.Spec)
			podLabels = append(podLabels, o.Labels)
		case "ConfigMap":
			var o core.ConfigMap
			strict(&o)
			configMaps[o.Name] = true
		case "Service":
			var o core.Service
			strict(&o)
			services = append(services, o)
		case "Job":
			// batch/v1 is not in Podman's copy of the API: check the pod.
			var o struct {
				Spec struct {
					Template core.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
				t.Fatal(err)
			}
			if p := o.Spec.Template.Spec.RestartPolicy; p != core.RestartPolicyOnFailure {
				t.Errorf("job %s restart policy %q", h.Metadata.Name, p)
			}
			pods = append(pods, o.Spec.Template.Spec)
		default:
			t.Errorf("unexpected kind %q", h.Kind)
		}
		if opts.Namespace != "" && !strings.Contains(doc, "namespace: "+opts.Namespace+"\n") {
			t.Errorf("%s %s lacks the namespace", h.Kind, h.Metadata.Name)
		}
	}
	if opts.Target == export.TargetPodman && len(services) > 0 {
		t.Errorf("the podman target wrote %d Services, which podman kube play ignores", len(services))
	}
	for _, s := range services {
		matched := false
		for _, l := range podLabels {
			ok := true
			for k, v := range s.Spec.Selector {
				ok = ok && l[k] == v
			}
			matched = matched || ok
		}
		if !matched {
			t.Errorf("service %s selects no pod", s.Name)
		}
		if s.Spec.ClusterIP != core.ClusterIPNone {
			t.Errorf("service %s is not headless", s.Name)
		}
	}
	for _, p := range pods {
		for _, v := range p.Volumes {
			if c := v.PersistentVolumeClaim; c != nil && !claims[c.ClaimName] {
				t.Errorf("volume %s claims %s, which the export does not write", v.Name, c.ClaimName)
			}
			if c := v.ConfigMap; c != nil && !configMaps[c.Name] {
				t.Errorf("volume %s uses config map %s, which the export does not write", v.Name, c.Name)
			}
		}
		for _, c := range p.Containers {
			for _, m := range c.VolumeMounts {
				found := false
				for _, v := range p.Volumes {
					found = found || v.Name == m.Name
				}
				if !found {
					t.Errorf("container %s mounts undeclared volume %s", c.Name, m.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && secretKeys != nil && !secretKeys[e.ValueFrom.SecretKeyRef.Key] {
					t.Errorf("container %s: %s refers to missing secret key %s", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Key)
				}
				if strings.Contains(e.Value, "outpost-secret:") {
					t.Errorf("container %s: %s holds a secret marker %q", c.Name, e.Name, e.Value)
				}
			}
		}
	}
}

func TestKubeRefusesWhatItCannotWrite(t *testing.T) {
	for _, c := range []struct {
		opts export.Options
		want []string
	}{
		{export.Options{Target: export.TargetPodman}, []string{"x-outpost.secrets.db-password", "--with-secrets"}},
		{export.Options{Target: "swarm"}, []string{`export target "swarm"`, "kubernetes", "podman"}},
		{export.Options{Namespace: "Tale_NS"}, []string{`namespace "Tale_NS"`}},
		{export.Options{StorageRequest: "lots"}, []string{`storage request "lots"`, "10Gi"}},
	} {
		_, _, err := export.Kube(rich(), c.opts)
		if err == nil {
			t.Errorf("%+v: no error", c.opts)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q lacks %q", c.opts, err, w)
			}
		}
	}
}

func TestKubeNeverWritesSecretValuesUnasked(t *testing.T) {
	app := rich()
	out, notes, err := export.Kube(app, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "kind: Secret") || strings.Contains(string(out), "outpost-secret:") {
		t.Errorf("secret values or markers written without SecretValues:\n%s", out)
	}
	found := false
	for _, n := range notes {
		found = found || (n.Where == "x-outpost.secrets" && strings.Contains(n.What, "kubectl create secret generic "+export.SecretName(app)))
	}
	if !found {
		t.Errorf("no note says how to create the Secret: %v", notes)
	}
}

// A Caddyfile appliance whose proxy service Outpost replaces (as Tale's
// compose.yml has it): the export writes that service back, its Caddyfile
// in a ConfigMap, since a cluster has no embedded proxy.
func TestKubeWritesTheReplacedProxyService(t *testing.T) {
	dir := t.TempDir()
	caddyfile := "{$SITE_ADDRESS:localhost} {\n\treverse_proxy platform:3000\n}\n"
	for name, content := range map[string]string{
		"Caddyfile": caddyfile,
		"compose.yml": `name: tale
x-outpost:
  proxy:
    service: proxy
    caddyfile: Caddyfile
services:
  platform:
    image: registry.example.com/tale/platform:1.2.0
  proxy:
    image: docker.io/library/caddy:2.8
    ports: ["80:80", "443:443"]
    volumes:
      - ./Caddyfile:/etc/caddy/Caddyfile:ro
      - caddy-data:/data
    depends_on: [platform]
volumes:
  caddy-data:
`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	app, _, err := compose.Load(context.Background(), compose.Options{Files: []string{filepath.Join(dir, "compose.yml")}, Environ: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if app.Proxy == nil || app.Proxy.Replaced == nil || app.Proxy.Replaced.Image != "docker.io/library/caddy:2.8" {
		t.Fatalf("the loader did not keep the replaced proxy service: %+v", app.Proxy)
	}
	if _, ok := app.Services["proxy"]; ok {
		t.Fatal("the replaced proxy service is among the services Outpost runs")
	}
	resolved := "localhost {\n\treverse_proxy platform:3000\n}\n"
	app.Proxy.CaddyfileText = resolved // what proxy.Capture stores at load
	out, notes, err := export.Kube(app, export.Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkManifests(t, out, export.Options{}, notes)
	for _, want := range []string{
		"kind: ConfigMap\nmetadata:\n  labels:\n    app.kubernetes.io/part-of: tale\n  name: tale-caddyfile\n",
		`  Caddyfile: "localhost {\n\treverse_proxy platform:3000\n}\n"` + "\n",
		"image: docker.io/library/caddy:2.8",
		"- mountPath: /etc/caddy/Caddyfile\n          name: caddyfile\n          readOnly: true\n          subPath: Caddyfile\n",
		"claimName: tale-caddy-data",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("export lacks %q:\n%s", want, out)
		}
	}
	said := false
	for _, n := range notes {
		said = said || (n.Where == "x-outpost.proxy" && strings.Contains(n.What, "service proxy, which it replaces under Outpost, is written"))
		if strings.Contains(n.What, "/Caddyfile written as a hostPath") {
			t.Errorf("the Caddyfile mount is noted as a hostPath: %s", n)
		}
	}
	if !said {
		t.Errorf("no note says the proxy service is written instead of the embedded proxy: %v", notes)
	}
}
