package compose

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// writeFiles writes name → content into a fresh directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "app")
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loadDir loads the named files of dir (compose.yml when none are named).
func loadDir(t *testing.T, dir string, opts Options, names ...string) (*model.Appliance, []Warning, error) {
	t.Helper()
	if len(names) == 0 {
		names = []string{"compose.yml"}
	}
	for _, n := range names {
		opts.Files = append(opts.Files, filepath.Join(dir, n))
	}
	return Load(context.Background(), opts)
}

func problems(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		t.Fatal("expected an error, got none")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error does not match ErrInvalid: %v", err)
	}
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error is not a *ValidationError: %v", err)
	}
	return verr.Problems
}

func TestValidationErrors(t *testing.T) {
	const base = "services:\n  a:\n    image: a\n  b:\n    image: b\n"
	tests := []struct {
		name     string
		files    map[string]string // compose.yml, then override.yml when present
		file     string            // expected base name of Problem.File
		key      string            // expected Problem.Key
		contains string            // expected in Problem.Message
	}{
		{
			name:     "unknown x-outpost field with suggestion",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  services:\n    a:\n      rol: rotatable\n"},
			file:     "compose.yml",
			key:      "x-outpost.services.a.rol",
			contains: `did you mean "role"`,
		},
		{
			name:     "unknown top-level x-outpost field",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  proxies: {}\n"},
			file:     "compose.yml",
			key:      "x-outpost.proxies",
			contains: `unknown field "proxies"`,
		},
		{
			name:     "bad role in service-level block",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    x-outpost:\n      role: blue-green\n"},
			file:     "compose.yml",
			key:      "services.a.x-outpost.role",
			contains: "not one of stateful, rotatable",
		},
		{
			name:     "wrong type",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  services:\n    a:\n      ready_markers: {a: b}\n"},
			file:     "compose.yml",
			key:      "x-outpost.services.a.ready_markers",
			contains: "expected a list",
		},
		{
			name:     "bad duration",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  services:\n    a:\n      stop_timeout: soon\n"},
			file:     "compose.yml",
			key:      "x-outpost.services.a.stop_timeout",
			contains: "not a duration",
		},
		{
			name:     "ready marker not absolute",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    x-outpost:\n      ready_markers: [tmp/ready]\n"},
			file:     "compose.yml",
			key:      "services.a.x-outpost.ready_markers.0",
			contains: "absolute path",
		},
		{
			name:     "depends_on unknown service",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    depends_on: [ghost]\n"},
			file:     "compose.yml",
			key:      "services.a.depends_on.ghost",
			contains: `"ghost", which is neither a service nor a job`,
		},
		{
			name: "dependency cycle",
			files: map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    depends_on: [b]\n" +
				"  b:\n    image: b\n    depends_on: [c]\n  c:\n    image: c\n    depends_on: [a]\n"},
			file:     "compose.yml",
			key:      "services.a.depends_on",
			contains: "dependency cycle: a -> b -> c -> a",
		},
		{
			name:     "job on unknown service",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  jobs:\n    migrate:\n      service: ghost\n      command: migrate\n"},
			file:     "compose.yml",
			key:      "x-outpost.jobs.migrate.service",
			contains: `service "ghost" does not exist`,
		},
		{
			name:     "job after unknown",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  jobs:\n    migrate:\n      service: a\n      command: [migrate]\n      after: [ghost]\n"},
			file:     "compose.yml",
			key:      "x-outpost.jobs.migrate.after",
			contains: `"ghost" is neither a service nor a job`,
		},
		{
			name:     "tls invalid",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  proxy:\n    tls: letsencrypt\n    routes: [{upstream: 'a:80'}]\n    sites: [':80']\n"},
			file:     "compose.yml",
			key:      "x-outpost.proxy.tls",
			contains: `tls "letsencrypt" is not one of internal`,
		},
		{
			name:     "health_listen not loopback",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  proxy:\n    health_listen: 0.0.0.0:2020\n    routes: [{upstream: 'a:80'}]\n    sites: [':80']\n"},
			file:     "compose.yml",
			key:      "x-outpost.proxy.health_listen",
			contains: "not a loopback address",
		},
		{
			name:     "route upstream unknown",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  proxy:\n    routes: [{upstream: 'ghost:80'}]\n    sites: [':80']\n"},
			file:     "compose.yml",
			key:      "x-outpost.proxy.routes.0.upstream",
			contains: `upstream service "ghost" does not exist`,
		},
		{
			name:     "privileged in the override file",
			files:    map[string]string{"compose.yml": base, "override.yml": "services:\n  b:\n    privileged: true\n"},
			file:     "override.yml",
			key:      "services.b.privileged",
			contains: "cap_add",
		},
		{
			name:     "network_mode host",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    network_mode: host\n"},
			file:     "compose.yml",
			key:      "services.a.network_mode",
			contains: "only the appliance network",
		},
		{
			name:     "devices",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    devices: [/dev/fuse]\n"},
			file:     "compose.yml",
			key:      "services.a.devices",
			contains: "device access",
		},
		{
			name:     "compose secrets",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    secrets: [k]\nsecrets:\n  k: {file: ./k}\n"},
			file:     "compose.yml",
			key:      "services.a.secrets",
			contains: "x-outpost.secrets",
		},
		{
			name:     "build without image",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    build: .\n"},
			file:     "compose.yml",
			key:      "services.a.build",
			contains: "service a has build: but no image: ; Outpost runs images, build them first or use `outpost bundle build`",
		},
		{
			name:     "anonymous volume",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    volumes: [/data]\n"},
			file:     "compose.yml",
			key:      "services.a.volumes.0",
			contains: "anonymous volume",
		},
		{
			name:     "undeclared volume",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    volumes: [data:/data]\n"},
			file:     "compose.yml",
			key:      "services.a.volumes",
			contains: `volume "data" is not declared`,
		},
		{
			name:     "healthy dependency without healthcheck",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    depends_on:\n      b: {condition: service_healthy}\n  b:\n    image: b\n"},
			file:     "compose.yml",
			key:      "services.a.depends_on.b",
			contains: "has no healthcheck",
		},
		{
			name: "dependency on a profile-only service",
			files: map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    depends_on: [t]\n" +
				"  t:\n    image: t\n    profiles: [test]\n"},
			file:     "compose.yml",
			key:      "services.a.depends_on.t",
			contains: "only runs with profile(s) test",
		},
		{
			name:     "secret not declared",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    x-outpost:\n      secrets: [api-key]\n"},
			file:     "compose.yml",
			key:      "services.a.x-outpost.secrets.0",
			contains: `secret "api-key" is not declared`,
		},
		{
			name:     "legacy of an unknown migration volume",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  volumes:\n    migrations: [{from: old, to: new}]\n"},
			file:     "compose.yml",
			key:      "x-outpost.volumes.migrations.0.from",
			contains: `volume "old" is not declared`,
		},
		{
			name:     "missing caddyfile",
			files:    map[string]string{"compose.yml": base + "x-outpost:\n  proxy:\n    caddyfile: ./Caddyfile\n"},
			file:     "compose.yml",
			key:      "x-outpost.proxy.caddyfile",
			contains: "does not exist",
		},
		{
			name:     "host port conflict",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    ports: ['80:80']\n  b:\n    image: b\n    ports: ['80:8080']\n"},
			file:     "compose.yml",
			key:      "services.b.ports",
			contains: "already published by a",
		},
		{
			name:     "invalid restart",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    restart: sometimes\n"},
			file:     "compose.yml",
			key:      "services.a.restart",
			contains: `restart "sometimes"`,
		},
		{
			name:     "healthcheck without test",
			files:    map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    healthcheck:\n      interval: 5s\n"},
			file:     "compose.yml",
			key:      "services.a.healthcheck",
			contains: "does not read the image's HEALTHCHECK",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, tt.files)
			names := []string{"compose.yml"}
			if _, ok := tt.files["override.yml"]; ok {
				names = append(names, "override.yml")
			}
			_, _, err := loadDir(t, dir, Options{}, names...)
			ps := problems(t, err)
			for _, p := range ps {
				if p.Key == tt.key && strings.Contains(p.Message, tt.contains) {
					if filepath.Base(p.File) != tt.file {
						t.Errorf("problem %q names file %q, want %s", p, p.File, tt.file)
					}
					if p.Line == 0 {
						t.Errorf("problem %q has no line", p)
					}
					return
				}
			}
			t.Errorf("no problem with key %q containing %q; got:\n%v", tt.key, tt.contains, err)
		})
	}
}

// Every problem is reported, not only the first.
func TestValidationCollectsAll(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `
services:
  a:
    image: a
    privileged: true
    depends_on: [ghost]
    x-outpost:
      role: primary
  b:
    build: .
x-outpost:
  proxy:
    tls: maybe
    routes: [{upstream: "a:80"}]
    sites: [":80"]
  jobs:
    j: {service: nobody, command: run}
  unknown: 1
`})
	_, _, err := loadDir(t, dir, Options{})
	ps := problems(t, err)
	want := []string{
		"services.a.privileged",
		"services.a.depends_on.ghost",
		"services.a.x-outpost.role",
		"services.b.build",
		"x-outpost.proxy.tls",
		"x-outpost.jobs.j.service",
		"x-outpost.unknown",
	}
	keys := map[string]bool{}
	for _, p := range ps {
		keys[p.Key] = true
		if p.File == "" || p.Line == 0 {
			t.Errorf("problem without location: %s", p)
		}
	}
	for _, k := range want {
		if !keys[k] {
			t.Errorf("missing problem for %s in:\n%v", k, err)
		}
	}
	// The message says where, what and how to fix, one per line.
	msg := err.Error()
	if !strings.Contains(msg, "compose.yml:5: services.a.privileged: ") {
		t.Errorf("error does not render FILE:LINE: KEY: problem:\n%s", msg)
	}
}

func TestRequiredVariable(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"compose.yml": "services:\n  db:\n    image: postgres:${PG_VERSION:?set PG_VERSION in .env}\n",
	})
	_, _, err := loadDir(t, dir, Options{})
	ps := problems(t, err)
	if len(ps) != 1 {
		t.Fatalf("want 1 problem, got %v", err)
	}
	p := ps[0]
	if !strings.Contains(p.Message, "PG_VERSION") || !strings.Contains(p.Message, "set PG_VERSION in .env") {
		t.Errorf("message does not name the variable and reason: %q", p.Message)
	}
	if filepath.Base(p.File) != "compose.yml" || p.Key != "services.db.image" || p.Line != 3 {
		t.Errorf("problem located at %s:%d %s, want compose.yml:3 services.db.image", p.File, p.Line, p.Key)
	}

	// The variable from Environ, from .env, or from an explicit env file.
	for name, opts := range map[string]Options{
		"environ":  {Environ: map[string]string{"PG_VERSION": "17"}},
		"env file": {EnvFiles: []string{filepath.Join(dir, "pg.env")}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(dir, "pg.env"), []byte("PG_VERSION=17\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			a, _, err := loadDir(t, dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Services["db"].Image; got != "postgres:17" {
				t.Errorf("image = %q, want postgres:17", got)
			}
		})
	}
}

func TestInterpolation(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"compose.yml": `services:
  app:
    image: ${REGISTRY:-docker.io/library}/app:${TAG:-latest}
    environment:
      FROM_ENV: ${FROM_ENV}
      FROM_DOTENV: ${FROM_DOTENV}
      BOTH: ${BOTH}
      PASSTHROUGH:
`,
		".env": "FROM_DOTENV=dotenv\nBOTH=dotenv\nTAG=1.0\n",
	})
	a, _, err := loadDir(t, dir, Options{Environ: map[string]string{"FROM_ENV": "environ", "BOTH": "environ", "PASSTHROUGH": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	s := a.Services["app"]
	if s.Image != "docker.io/library/app:1.0" {
		t.Errorf("image = %q", s.Image)
	}
	want := map[string]string{"FROM_ENV": "environ", "FROM_DOTENV": "dotenv", "BOTH": "environ", "PASSTHROUGH": "p"}
	for k, v := range want {
		if s.Environment[k] != v {
			t.Errorf("%s = %q, want %q (environment %v)", k, s.Environment[k], v, s.Environment)
		}
	}
}

func TestProfiles(t *testing.T) {
	files := []string{"testdata/tale/compose.yml", "testdata/tale/compose.test.yml"}
	for _, tt := range []struct {
		profiles  []string
		wantSmoke bool
	}{
		{nil, false},
		{[]string{"test"}, true},
		{[]string{"other"}, false},
		{[]string{"*"}, true},
	} {
		a, _, err := Load(context.Background(), Options{Files: files, Profiles: tt.profiles, Environ: map[string]string{}})
		if err != nil {
			t.Fatalf("profiles %v: %v", tt.profiles, err)
		}
		if _, got := a.Services["smoke"]; got != tt.wantSmoke {
			t.Errorf("profiles %v: smoke present = %v, want %v", tt.profiles, got, tt.wantSmoke)
		}
		// Services without profiles always run; the proxy never does.
		for _, s := range []string{"db", "convex", "crawler", "rag", "platform"} {
			if a.Services[s] == nil {
				t.Errorf("profiles %v: service %s missing", tt.profiles, s)
			}
		}
		if a.Services["proxy"] != nil {
			t.Errorf("profiles %v: the replaced proxy service is still present", tt.profiles)
		}
	}
}

// Override files merge in order: the test file's !override ports replace
// the base ones, its added ports extend them.
func TestOverridePorts(t *testing.T) {
	base, _, err := Load(context.Background(), Options{Files: []string{"testdata/tale/compose.yml"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := base.Services["db"].Ports; len(got) != 1 || got[0].HostPort != 5432 {
		t.Errorf("base db ports = %+v, want 5432", got)
	}
	if got := base.Services["convex"].Ports; len(got) != 0 {
		t.Errorf("base convex ports = %+v, want none", got)
	}
	test, _, err := Load(context.Background(), Options{Files: []string{"testdata/tale/compose.yml", "testdata/tale/compose.test.yml"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := test.Services["db"].Ports; len(got) != 1 || got[0].HostPort != 15432 || got[0].ContainerPort != 5432 {
		t.Errorf("test db ports = %+v, want 15432:5432 only", got)
	}
	if got := test.Services["convex"].Ports; len(got) != 3 {
		t.Errorf("test convex ports = %+v, want 3 (a range of 2 plus one)", got)
	}
}

func TestWarnings(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `version: "3.8"
services:
  a:
    image: a
    build: .
    links: [b]
    sysctls: {net.core.somaxconn: 1024}
    logging: {driver: syslog}
    container_name: legacy-a
    restart: on-failure:3
    deploy: {replicas: 2}
    privileged: false
    depends_on: [proxy]
  b:
    image: b
  proxy:
    image: caddy
x-outpost:
  proxy:
    service: proxy
    routes: [{upstream: "a:80"}]
    sites: [":80"]
`})
	a, warnings, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"version":                     "obsolete",
		"services.a.build":            "runs the image named by image:",
		"services.a.links":            "service name",
		"services.a.sysctls":          "ignored",
		"services.a.logging":          "logging driver is ignored",
		"services.a.container_name":   "network alias",
		"services.a.restart":          "retry limit 3 is ignored",
		"services.a.deploy.replicas":  "one container per service",
		"services.a.depends_on.proxy": "dependency on proxy dropped",
		"services.proxy":              "replaced by the embedded proxy",
	}
	got := map[string]string{}
	for _, w := range warnings {
		got[w.Key] = w.Message
		if w.File == "" || w.Line == 0 {
			t.Errorf("warning without location: %s", w)
		}
	}
	for k, sub := range want {
		if !strings.Contains(got[k], sub) {
			t.Errorf("warning %s = %q, want it to contain %q", k, got[k], sub)
		}
	}
	if _, ok := got["services.a.privileged"]; ok {
		t.Error("privileged: false must not warn")
	}
	if len(warnings) != len(want) {
		t.Errorf("got %d warnings, want %d:\n%v", len(warnings), len(want), warnings)
	}
	s := a.Services["a"]
	if s.Restart != model.RestartOnFailure {
		t.Errorf("restart = %q", s.Restart)
	}
	if _, ok := s.DependsOn["proxy"]; ok {
		t.Error("dependency on the replaced proxy kept")
	}
	if _, ok := s.DependsOn["b"]; !ok {
		t.Error("links: b should still order a after b")
	}
	if got := s.Networks["default"]; len(got) != 1 || got[0] != "legacy-a" {
		t.Errorf("container_name alias missing: networks = %v", s.Networks)
	}
}

func TestName(t *testing.T) {
	const svc = "services:\n  a:\n    image: a\n"
	for _, tt := range []struct {
		name    string
		content string
		opt     string
		want    string
	}{
		{"directory", svc, "", "app"},
		{"compose name", "name: composed\n" + svc, "", "composed"},
		{"x-outpost wins over compose", "name: composed\n" + svc + "x-outpost: {name: outposted}\n", "", "outposted"},
		{"interpolated x-outpost name", svc + "x-outpost: {name: '${APP:-fromvar}'}\n", "", "fromvar"},
		{"option wins", "name: composed\n" + svc + "x-outpost: {name: outposted}\n", "chosen", "chosen"},
		{"normalised", svc + "x-outpost: {name: My.App}\n", "", "myapp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"compose.yml": tt.content})
			a, _, err := loadDir(t, dir, Options{ProjectName: tt.opt})
			if err != nil {
				t.Fatal(err)
			}
			if a.Name != tt.want {
				t.Errorf("name = %q, want %q", a.Name, tt.want)
			}
			if got := a.Networks["default"].Name; got != tt.want+"_default" {
				t.Errorf("default network = %q", got)
			}
		})
	}
}

func TestResources(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `
name: shop
services:
  a:
    image: a
    volumes:
      - data:/data
      - named:/named
      - ext:/ext:ro
      - ./conf:/conf:ro
      - type: tmpfs
        target: /cache
        tmpfs: {size: 1m}
    networks:
      front:
        aliases: [a, www]
      back:
volumes:
  data:
  named: {name: exact-name}
  ext: {external: true}
networks:
  front:
  back: {internal: true}
  shared: {external: true, name: corp-net}
`})
	a, _, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	vols := map[string]string{"data": "shop_data", "named": "exact-name", "ext": "ext"}
	for k, want := range vols {
		if got := a.Volumes[k].Name; got != want {
			t.Errorf("volume %s name = %q, want %q", k, got, want)
		}
	}
	if !a.Volumes["ext"].External {
		t.Error("ext not external")
	}
	nets := map[string]string{"default": "shop_default", "front": "shop_front", "back": "shop_back", "shared": "corp-net"}
	for k, want := range nets {
		if got := a.Networks[k].Name; got != want {
			t.Errorf("network %s name = %q, want %q", k, got, want)
		}
	}
	if !a.Networks["back"].Internal {
		t.Error("back not internal")
	}
	s := a.Services["a"]
	if got := s.Networks["front"]; len(got) != 1 || got[0] != "www" {
		t.Errorf("front aliases = %v, want [www] (the service name is implicit)", got)
	}
	if _, ok := s.Networks["default"]; ok {
		t.Error("a service with networks must not join default")
	}
	wantMounts := []model.Mount{
		{Type: model.MountVolume, Source: "data", Target: "/data"},
		{Type: model.MountVolume, Source: "named", Target: "/named"},
		{Type: model.MountVolume, Source: "ext", Target: "/ext", ReadOnly: true},
		{Type: model.MountBind, Source: filepath.Join(dir, "conf"), Target: "/conf", ReadOnly: true},
		{Type: model.MountTmpfs, Target: "/cache", TmpfsSize: 1 << 20},
	}
	if len(s.Mounts) != len(wantMounts) {
		t.Fatalf("mounts = %+v", s.Mounts)
	}
	for i, m := range wantMounts {
		if s.Mounts[i] != m {
			t.Errorf("mount %d = %+v, want %+v", i, s.Mounts[i], m)
		}
	}
}

func TestHealthcheckNormalisation(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `
services:
  shell:
    image: a
    healthcheck:
      test: test -f /tmp/ready
  none:
    image: a
    healthcheck:
      test: ["NONE"]
  disabled:
    image: a
    healthcheck:
      test: ["CMD", "true"]
      disable: true
  timed:
    image: a
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      timeout: 1s
      retries: 7
      start_period: 300s
      start_interval: 1s
`})
	a, _, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sh := a.Services["shell"].Healthcheck
	if sh == nil || len(sh.Test) != 2 || sh.Test[0] != "CMD-SHELL" || sh.Test[1] != "test -f /tmp/ready" {
		t.Errorf("shell test = %+v", sh)
	}
	if sh.Interval != model.DefaultHealthInterval || sh.Timeout != model.DefaultHealthTimeout ||
		sh.Retries != model.DefaultHealthRetries || sh.StartInterval != model.DefaultHealthStartInterval || sh.StartPeriod != 0 {
		t.Errorf("defaults not applied: %+v", sh)
	}
	for _, n := range []string{"none", "disabled"} {
		if a.Services[n].Healthcheck != nil {
			t.Errorf("%s: healthcheck = %+v, want nil", n, a.Services[n].Healthcheck)
		}
	}
	want := model.Healthcheck{Test: []string{"CMD", "true"}, Interval: 2 * time.Second, Timeout: time.Second, Retries: 7, StartPeriod: 300 * time.Second, StartInterval: time.Second}
	got := a.Services["timed"].Healthcheck
	if got == nil || got.Interval != want.Interval || got.Timeout != want.Timeout || got.Retries != want.Retries || got.StartPeriod != want.StartPeriod || got.StartInterval != want.StartInterval {
		t.Errorf("timed = %+v, want %+v", got, want)
	}
}

// The service-level x-outpost block overrides the top-level one field by
// field; stop_grace_period beats both stop_timeouts.
func TestServiceExtensionMerge(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `
services:
  a:
    image: a
    x-outpost:
      role: rotatable
  b:
    image: b
    stop_grace_period: 5s
    x-outpost:
      stop_timeout: 2m
  c:
    image: c
x-outpost:
  services:
    a: {role: stateful, stop_timeout: 1m, ready_markers: [/tmp/a-ready]}
    b: {stop_timeout: 3m}
`})
	a, _, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sa := a.Services["a"]
	if sa.Role != model.RoleRotatable || sa.StopGracePeriod != time.Minute || len(sa.ReadyMarkers) != 1 {
		t.Errorf("a = role %s grace %s markers %v", sa.Role, sa.StopGracePeriod, sa.ReadyMarkers)
	}
	if got := a.Services["b"].StopGracePeriod; got != 5*time.Second {
		t.Errorf("b grace = %s, want stop_grace_period 5s", got)
	}
	if got := a.Services["c"]; got.StopGracePeriod != model.DefaultStopGrace || got.Role != model.RoleStateful {
		t.Errorf("c = grace %s role %s, want defaults", got.StopGracePeriod, got.Role)
	}
}

func TestOpenAlephJob(t *testing.T) {
	a, _, err := Load(context.Background(), Options{Files: []string{"testdata/openaleph/compose.yml"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Jobs) != 1 {
		t.Fatalf("jobs = %+v", a.Jobs)
	}
	j := a.Jobs[0]
	if j.Name != "upgrade" || j.Service != "api" || strings.Join(j.Command, " ") != "aleph upgrade" ||
		strings.Join(j.After, ",") != "postgres,elasticsearch" || j.When != model.JobAlways || j.Timeout != 15*time.Minute {
		t.Errorf("job = %+v", j)
	}
	if strings.Join(j.Before, ",") != "api,worker" {
		t.Errorf("job before = %v", j.Before)
	}
	// before stays on the job: the planner adds the waits only for the
	// jobs that run in the current operation.
	for _, s := range []string{"api", "worker"} {
		if _, ok := a.Services[s].DependsOn["upgrade"]; ok {
			t.Errorf("%s has the job in depends_on: %+v", s, a.Services[s].DependsOn)
		}
	}
	if a.Proxy == nil || a.Proxy.TLS != model.TLSInternal || a.Proxy.HealthListen != DefaultHealthListen {
		t.Errorf("proxy defaults not applied: %+v", a.Proxy)
	}
	if got := a.Secrets[0]; got.Env != "SECRET_KEY" || got.Length != 48 || got.Generate != "base64" {
		t.Errorf("secret = %+v", got)
	}
}

func TestLoadBytes(t *testing.T) {
	doc := []byte("services:\n  web:\n    image: demo\n    x-outpost: {role: sideways}\nx-outpost: {name: demo}\n")
	_, _, err := LoadBytes(context.Background(), "embedded:demo/compose.yml", doc, Options{})
	ps := problems(t, err)
	if ps[0].File != "embedded:demo/compose.yml" || ps[0].Key != "services.web.x-outpost.role" || ps[0].Line != 4 {
		t.Errorf("problem = %+v", ps[0])
	}
	good := []byte("services:\n  web:\n    image: demo\nx-outpost: {name: demo}\n")
	a, _, err := LoadBytes(context.Background(), "embedded:demo/compose.yml", good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "demo" || a.Services["web"].Image != "demo" || a.Sources[0] != "embedded:demo/compose.yml" {
		t.Errorf("appliance = %+v", a)
	}
}

func TestLoadNeedsFiles(t *testing.T) {
	if _, _, err := Load(context.Background(), Options{}); err == nil {
		t.Error("Load without files succeeded")
	}
	_, _, err := Load(context.Background(), Options{Files: []string{"testdata/does-not-exist.yml"}})
	if err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: err = %v, want a wrapped os.ErrNotExist", err)
	}
}

func TestUnsetVariableWarning(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": "services:\n  a:\n    image: a:${TAG}\n    environment:\n      COST: $$5\n      OK: ${SET:-x}\n"})
	a, warnings, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Services["a"].Image != "a:" || a.Services["a"].Environment["COST"] != "$5" {
		t.Errorf("service = %+v", a.Services["a"])
	}
	if len(warnings) != 1 {
		t.Fatalf("warnings = %v, want one about TAG", warnings)
	}
	w := warnings[0]
	if w.Key != "services.a.image" || w.Line != 3 || !strings.Contains(w.Message, "variable TAG is not set") {
		t.Errorf("warning = %s", w)
	}
}

func TestSchemaError(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": "services:\n  a:\n    image: a\n    ports: {web: 80}\n"})
	_, _, err := loadDir(t, dir, Options{})
	ps := problems(t, err)
	if p := ps[0]; filepath.Base(p.File) != "compose.yml" || p.Key != "services.a.ports" || p.Line != 4 || !strings.Contains(p.Message, "must be") {
		t.Errorf("problem = %+v", p)
	}
}
