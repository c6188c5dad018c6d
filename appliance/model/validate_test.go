package model

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// valid returns a small appliance that passes Validate.
func valid() *Appliance {
	return &Appliance{
		Name: "shop",
		Services: map[string]*Service{
			"db": {Name: "db", Image: "postgres", Role: RoleStateful, Restart: RestartAlways,
				Healthcheck: &Healthcheck{Test: []string{"CMD", "pg_isready"}},
				Mounts:      []Mount{{Type: MountVolume, Source: "data", Target: "/var/lib/postgresql/data"}},
				Networks:    map[string][]string{"default": nil}},
			"web": {Name: "web", Image: "web", Role: RoleRotatable, Restart: RestartNo,
				DependsOn: map[string]Dependency{"db": {Condition: ConditionHealthy, Required: true}},
				Ports:     []Port{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
				Secrets:   []string{"key"}},
		},
		Volumes:  map[string]*Volume{"data": {Key: "data", Name: "shop_data"}},
		Networks: map[string]*Network{"default": {Key: "default", Name: "shop_default"}},
		Jobs:     []*Job{{Name: "migrate", Service: "web", Command: []string{"migrate"}, After: []string{"db"}, Before: []string{"web"}, When: JobAlways, Timeout: time.Minute}},
		Secrets:  []*Secret{{Name: "key", Generate: "hex", Length: 32, Env: "KEY"}},
		Proxy:    &Proxy{TLS: TLSInternal, HealthListen: "127.0.0.1:2020", Routes: []Route{{Upstream: "web:80"}}, Sites: []string{":80"}},
	}
}

func TestValidateOK(t *testing.T) {
	if err := valid().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateProblems(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(a *Appliance)
		key      string
		contains string
	}{
		{"bad name", func(a *Appliance) { a.Name = "Shop!" }, "name", "not a valid appliance name"},
		{"no image", func(a *Appliance) { a.Services["web"].Image = "" }, "services.web.image", "no image"},
		{"bad role", func(a *Appliance) { a.Services["web"].Role = "x" }, "services.web.role", "not one of stateful"},
		{"relative marker", func(a *Appliance) { a.Services["web"].ReadyMarkers = []string{"tmp/x"} }, "services.web.ready_markers", "absolute"},
		{"unknown volume", func(a *Appliance) { a.Services["db"].Mounts[0].Source = "nope" }, "services.db.volumes", `volume "nope"`},
		{"unknown network", func(a *Appliance) { a.Services["db"].Networks["back"] = nil }, "services.db.networks", `network "back"`},
		{"unknown dependency", func(a *Appliance) {
			a.Services["web"].DependsOn["cache"] = Dependency{Condition: ConditionStarted, Required: true}
		}, "services.web.depends_on.cache", "neither a service nor a job"},
		{"optional unknown dependency is fine", func(a *Appliance) {
			a.Services["web"].DependsOn["cache"] = Dependency{Condition: ConditionStarted}
		}, "", ""},
		{"healthy without healthcheck", func(a *Appliance) { a.Services["db"].Healthcheck = nil }, "services.web.depends_on.db", "no healthcheck"},
		{"ready markers count as health", func(a *Appliance) {
			a.Services["db"].Healthcheck = nil
			a.Services["db"].ReadyMarkers = []string{"/tmp/ready"}
		}, "", ""},
		{"dependency on an always job", func(a *Appliance) {
			a.Services["web"].DependsOn["migrate"] = Dependency{Condition: ConditionCompleted, Required: true}
		}, "", ""},
		{"dependency on an upgrade-only job", func(a *Appliance) {
			a.Jobs[0].When = JobUpgrade
			a.Services["web"].DependsOn["migrate"] = Dependency{Condition: ConditionCompleted, Required: true}
		}, "services.web.depends_on.migrate", "list \"web\" in the job's before"},
		{"undeclared secret", func(a *Appliance) { a.Services["web"].Secrets = []string{"other"} }, "services.web.secrets", `secret "other"`},
		{"port conflict", func(a *Appliance) {
			a.Services["db"].Ports = []Port{{HostPort: 8080, ContainerPort: 5432, Protocol: "tcp"}}
		}, "services.web.ports", "already published by db"},
		{"tls", func(a *Appliance) { a.Proxy.TLS = "maybe" }, "proxy.tls", "not one of internal"},
		{"health listen public", func(a *Appliance) { a.Proxy.HealthListen = "0.0.0.0:2020" }, "proxy.health_listen", "not a loopback"},
		{"health listen ipv6 loopback", func(a *Appliance) { a.Proxy.HealthListen = "[::1]:2020" }, "", ""},
		{"route upstream", func(a *Appliance) { a.Proxy.Routes[0].Upstream = "api:80" }, "proxy.routes.0.upstream", `"api" does not exist`},
		{"proxy service still running", func(a *Appliance) { a.Proxy.Service = "web" }, "proxy.service", "must not also run"},
		{"job service", func(a *Appliance) { a.Jobs[0].Service = "nope" }, "jobs.migrate.service", `"nope" does not exist`},
		{"job when", func(a *Appliance) { a.Jobs[0].When = "weekly" }, "jobs.migrate.when", "not one of always"},
		{"job clashes with service", func(a *Appliance) { a.Jobs[0].Name = "db" }, "services.db", "both named"},
		{"secret generate", func(a *Appliance) { a.Secrets[0].Generate = "uuid" }, "secrets.key.generate", "not one of hex"},
		{"secret env", func(a *Appliance) { a.Secrets[0].Env = "1X" }, "secrets.key.env", "not a valid environment variable"},
		{"migration", func(a *Appliance) { a.VolumeMigrations = []VolumeMigration{{From: "old", To: "data"}} }, "volume_migrations.0.from", `"old" is not declared`},
		{"missing default network", func(a *Appliance) {
			delete(a.Networks, "default")
			a.Services["db"].Networks = nil
		}, "networks.default", "missing"},
		{"cycle through a job", func(a *Appliance) {
			// web waits for migrate (before), migrate waits for db
			// (after), db waits for web: db -> web -> migrate -> db.
			a.Services["db"].DependsOn = map[string]Dependency{"web": {Condition: ConditionStarted, Required: true}}
		}, "services.db.depends_on", "dependency cycle: db -> web -> migrate -> db"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := valid()
			tt.mutate(a)
			err := a.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			for _, p := range verr.Problems {
				if p.Key == tt.key && strings.Contains(p.Message, tt.contains) {
					return
				}
			}
			t.Errorf("no problem %s containing %q in:\n%v", tt.key, tt.contains, err)
		})
	}
}

// A cycle is reported once, however many nodes it is entered from.
func TestValidateCycleOnce(t *testing.T) {
	a := valid()
	a.Jobs = nil
	a.Services["db"].DependsOn = map[string]Dependency{"web": {Condition: ConditionStarted, Required: true}}
	err := a.Validate()
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	n := 0
	for _, p := range verr.Problems {
		if strings.Contains(p.Message, "dependency cycle") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("cycle reported %d times:\n%v", n, err)
	}
}
