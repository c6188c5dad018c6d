package upgrade

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// demo returns a small Tale-shaped appliance: a stateful db with a volume,
// a rotatable api on it, a rotatable web publishing a fixed port.
func demo() *model.Appliance {
	hc := &model.Healthcheck{Test: []string{"CMD", "true"}, Interval: time.Second, Retries: 3}
	return &model.Appliance{
		Name: "app", Version: "1",
		Services: map[string]*model.Service{
			"db": {Name: "db", Image: "db:1", Role: model.RoleStateful, Healthcheck: hc,
				Mounts: []model.Mount{{Type: model.MountVolume, Source: "data", Target: "/data"}}},
			"api": {Name: "api", Image: "app:1", Role: model.RoleRotatable, Healthcheck: hc,
				DependsOn: map[string]model.Dependency{"db": {Condition: model.ConditionHealthy, Required: true}}},
			"web": {Name: "web", Image: "app:1", Role: model.RoleRotatable,
				Ports:     []model.Port{{HostIP: "127.0.0.1", HostPort: 18000, ContainerPort: 3000, Protocol: "tcp"}},
				DependsOn: map[string]model.Dependency{"api": {Condition: model.ConditionHealthy, Required: true}}},
		},
		Volumes: map[string]*model.Volume{"data": {Key: "data", Name: "app_data"}},
	}
}

func TestCompute(t *testing.T) {
	images := map[string]string{"db": "sha256:d1", "api": "sha256:a1", "web": "sha256:a1"}
	tests := []struct {
		name      string
		change    func(a *model.Appliance)
		newImages map[string]string
		want      map[string]Action
		reason    map[string]string // substring of the reason
		gap       map[string]string // substring of the host port gap
		jobs      []string
		legacy    []string
		data      bool
		unchanged bool
	}{
		{
			name:      "identical",
			change:    func(*model.Appliance) {},
			want:      map[string]Action{"db": ActionKeep, "api": ActionKeep, "web": ActionKeep},
			unchanged: true,
		},
		{
			name:   "rotatable image change rotates",
			change: func(a *model.Appliance) { a.Services["api"].Image = "app:2" },
			want:   map[string]Action{"db": ActionKeep, "api": ActionRotate, "web": ActionKeep},
			reason: map[string]string{"api": "image app:1 → app:2"},
		},
		{
			name:      "same tag, new image ID",
			change:    func(*model.Appliance) {},
			newImages: map[string]string{"db": "sha256:d1", "api": "sha256:a2", "web": "sha256:a1"},
			want:      map[string]Action{"db": ActionKeep, "api": ActionRotate, "web": ActionKeep},
			reason:    map[string]string{"api": "now has ID a2"},
		},
		{
			name:   "fixed host port without a proxy route forces in place",
			change: func(a *model.Appliance) { a.Services["web"].Image = "app:2" },
			want:   map[string]Action{"db": ActionKeep, "api": ActionKeep, "web": ActionReplace},
			reason: map[string]string{"web": "fixed host port 18000, which two copies cannot share, and the proxy does not route to it"},
			data:   false,
		},
		{
			name: "fixed host port behind the proxy rotates, with the port's gap stated",
			change: func(a *model.Appliance) {
				a.Services["web"].Image = "app:2"
				a.Proxy = &model.Proxy{Routes: []model.Route{{Path: "/api/*", Upstream: "api:8080"}, {Upstream: "web:3000"}}}
			},
			want: map[string]Action{"db": ActionKeep, "api": ActionKeep, "web": ActionRotate},
			gap:  map[string]string{"web": "host port 18000 is unavailable for ~2s while web is replaced; traffic through the proxy is not interrupted"},
		},
		{
			name: "a Caddyfile may route to any service",
			change: func(a *model.Appliance) {
				a.Services["web"].Image = "app:2"
				a.Services["web"].Ports = append(a.Services["web"].Ports, model.Port{HostPort: 18001, ContainerPort: 3001, Protocol: "tcp"})
				a.Proxy = &model.Proxy{Caddyfile: "Caddyfile"}
			},
			want: map[string]Action{"db": ActionKeep, "api": ActionKeep, "web": ActionRotate},
			gap:  map[string]string{"web": "host ports 18000, 18001 are unavailable"},
		},
		{
			name:   "stateful change is in place and gates its dependants",
			change: func(a *model.Appliance) { a.Services["db"].Image = "db:2"; a.Services["api"].Image = "app:2" },
			want:   map[string]Action{"db": ActionReplace, "api": ActionReplace, "web": ActionKeep},
			reason: map[string]string{"api": "depends on db"},
			data:   true,
		},
		{
			name: "an upgrade job before a rotatable service gates it",
			change: func(a *model.Appliance) {
				a.Services["api"].Image = "app:2"
				a.Jobs = []*model.Job{{Name: "migrate", Service: "api", Command: []string{"migrate"}, After: []string{"db"}, Before: []string{"api"}, When: model.JobUpgrade}}
			},
			want:   map[string]Action{"db": ActionKeep, "api": ActionReplace, "web": ActionKeep},
			reason: map[string]string{"api": "waits for job migrate"},
			jobs:   []string{"migrate"},
			data:   true,
		},
		{
			name: "install-only jobs do not run",
			change: func(a *model.Appliance) {
				a.Jobs = []*model.Job{{Name: "seed", Service: "api", Command: []string{"seed"}, After: []string{"db"}, When: model.JobInstall}}
			},
			want: map[string]Action{"db": ActionKeep, "api": ActionKeep, "web": ActionKeep},
		},
		{
			name: "added and removed services, legacy volume",
			change: func(a *model.Appliance) {
				delete(a.Services, "db")
				delete(a.Services["api"].DependsOn, "db")
				a.Services["cache"] = &model.Service{Name: "cache", Image: "cache:1", Role: model.RoleStateful}
			},
			want:   map[string]Action{"cache": ActionAdd, "api": ActionRotate, "web": ActionKeep, "db": ActionRemove},
			legacy: []string{"data"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := demo()
			tt.change(next)
			ni := tt.newImages
			if ni == nil {
				ni = images
			}
			p, err := Compute(demo(), next, images, ni)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Action{}
			for _, c := range p.Services {
				got[c.Service] = c.Action
				if want := tt.reason[c.Service]; want != "" && !strings.Contains(c.Reason, want) {
					t.Errorf("%s reason %q, want it to contain %q", c.Service, c.Reason, want)
				}
				if want := tt.gap[c.Service]; (want == "") != (c.HostPortGap == "") || !strings.Contains(c.HostPortGap, want) {
					t.Errorf("%s host port gap %q, want it to contain %q", c.Service, c.HostPortGap, want)
				}
				if c.HostPortGap != "" && !strings.Contains(p.Render(), "\n           "+c.HostPortGap+"\n") {
					t.Errorf("render lacks the gap on its own line:\n%s", p.Render())
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("actions %v, want %v", got, tt.want)
			}
			if !reflect.DeepEqual(p.Jobs, tt.jobs) {
				t.Errorf("jobs %v, want %v", p.Jobs, tt.jobs)
			}
			if !reflect.DeepEqual(p.Legacy, tt.legacy) {
				t.Errorf("legacy %v, want %v", p.Legacy, tt.legacy)
			}
			if (len(p.DataChanges) > 0) != tt.data {
				t.Errorf("data changes %v, want any: %v", p.DataChanges, tt.data)
			}
			if p.Unchanged != tt.unchanged {
				t.Errorf("unchanged %v, want %v", p.Unchanged, tt.unchanged)
			}
			if !strings.Contains(p.Render(), "upgrade app") {
				t.Errorf("render: %s", p.Render())
			}
		})
	}
}

func TestComputeOrder(t *testing.T) {
	next := demo()
	for _, s := range next.Services {
		s.Image = "x:2"
	}
	p, err := Compute(demo(), next, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, c := range p.Services {
		order = append(order, c.Service)
	}
	if want := []string{"db", "api", "web"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("order %v, want the start order %v", order, want)
	}
}

func TestComputeRefusesOtherAppliance(t *testing.T) {
	next := demo()
	next.Name = "other"
	if _, err := Compute(demo(), next, nil, nil); err == nil || !strings.Contains(err.Error(), "--name app") {
		t.Fatalf("err %v, want a hint to pass --name", err)
	}
}
