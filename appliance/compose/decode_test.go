package compose

import (
	"reflect"
	"sort"
	"testing"
	"time"
)

func TestDecodeStrict(t *testing.T) {
	in := map[string]any{
		"name":    "tale",
		"version": 1.5, // a YAML number where a string is expected
		"x-notes": "ignored",
		"proxy": map[string]any{
			"tls":    "internal",
			"routes": []any{map[string]any{"upstream": "web:80", "status": "301", "bogus": true}},
		},
		"services": map[string]any{
			"web": map[string]any{
				"role":          "rotatable",
				"ready_markers": "/tmp/ready", // one scalar for a list
				"stop_timeout":  90,           // seconds
				"backup":        map[string]any{"command": "pg_dumpall -U 'the user'"},
			},
			"db": map[string]any{"stop_timeout": "1m30s", "secrets": map[string]any{"a": 1}},
		},
		"jobs": map[string]any{
			"m": map[string]any{"command": []any{"aleph", "upgrade"}, "timeout": "soon"},
		},
		"secrets": map[string]any{"k": map[string]any{"length": "48"}},
		"unknwn":  1,
	}
	var x xOutpost
	var bad []string
	decodeStrict(in, &x, "x-outpost", func(key, msg string) { bad = append(bad, key) })

	sort.Strings(bad)
	wantBad := []string{
		"x-outpost.jobs.m.timeout",
		"x-outpost.proxy.routes.0.bogus",
		"x-outpost.services.db.secrets",
		"x-outpost.unknwn",
	}
	if !reflect.DeepEqual(bad, wantBad) {
		t.Errorf("problems at %v, want %v", bad, wantBad)
	}
	if x.Name != "tale" || x.Version != "1.5" {
		t.Errorf("name/version = %q/%q", x.Name, x.Version)
	}
	if r := x.Proxy.Routes[0]; r.Upstream != "web:80" || r.Status != 301 {
		t.Errorf("route = %+v", r)
	}
	web := x.Services["web"]
	if web.Role != "rotatable" || !reflect.DeepEqual(web.ReadyMarkers, []string{"/tmp/ready"}) || *web.StopTimeout != 90*time.Second {
		t.Errorf("web = %+v", web)
	}
	if got := []string(web.Backup.Command); !reflect.DeepEqual(got, []string{"pg_dumpall", "-U", "the user"}) {
		t.Errorf("backup command = %q", got)
	}
	if *x.Services["db"].StopTimeout != 90*time.Second {
		t.Errorf("db stop_timeout = %s", *x.Services["db"].StopTimeout)
	}
	if got := []string(x.Jobs["m"].Command); !reflect.DeepEqual(got, []string{"aleph", "upgrade"}) {
		t.Errorf("job command = %q", got)
	}
	if *x.Secrets["k"].Length != 48 {
		t.Errorf("length = %d", *x.Secrets["k"].Length)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"role", "ready_markers", "stop_timeout", "backup", "secrets"}
	for in, want := range map[string]string{"rol": "role", "secret": "secrets", "stop_timout": "stop_timeout", "zzz": ""} {
		if got := suggest(in, names); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
