package service

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/model"
	assets "github.com/outpostdev/outpost/embed"
)

var update = flag.Bool("update", false, "rewrite golden files")

// taleApp is Tale's resolved definition, as the compose package's golden
// test records it.
func taleApp(t *testing.T) *model.Appliance {
	t.Helper()
	data, err := os.ReadFile("../compose/testdata/tale.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var app model.Appliance
	if err := json.Unmarshal(data, &app); err != nil {
		t.Fatal(err)
	}
	return &app
}

func demoApp(t *testing.T) *model.Appliance {
	t.Helper()
	data, err := assets.FS.ReadFile(assets.DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	app, _, err := compose.LoadBytes(context.Background(), "demo/compose.yml", data, compose.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `go test ./appliance/service -update`)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the rendered unit (run with -update if intended):\n%s", path, got)
	}
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		app    *model.Appliance
		user   string
		host   string
		args   []string
		nofile uint64
	}{
		{golden: "tale.service", app: taleApp(t), args: []string{"-f", "/etc/outpost/tale/compose.yml", "-f", "/etc/outpost/tale/compose.test.yml", "--name", "tale"}, nofile: 65536},
		{golden: "demo-container-host.service", app: demoApp(t), user: "demo-svc", host: "unix:///run/host podman/podman.sock", nofile: 20000},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			lay, err := LayoutFor(tc.app.Name, tc.user)
			if err != nil {
				t.Fatal(err)
			}
			tp, err := Timeouts(tc.app)
			if err != nil {
				t.Fatal(err)
			}
			out, err := Render(Unit{Layout: lay, Version: tc.app.Version, Args: tc.args, ContainerHost: tc.host, Timeouts: tp, LimitNOFILE: tc.nofile})
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, out)
			for _, want := range []string{"Type=notify\n", "NotifyAccess=main\n", "AmbientCapabilities=CAP_NET_BIND_SERVICE\n", "KillMode=mixed\n", "Restart=on-failure\n", "User=" + lay.User + "\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("unit lacks %q", want)
				}
			}
			if strings.Contains(out, "{{") {
				t.Error("unit contains {{, which kardianos would try to expand")
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	// Tale: db (60s start, 5×(10s+5s)) → convex (same) → platform …; the
	// start bound must cover the whole chain, the stop bound every level.
	tp, err := Timeouts(taleApp(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(tp.StartChain) < 3 || !strings.HasPrefix(tp.StartChain[0], "db ") {
		t.Errorf("start chain %v: want it to begin at db and span at least 3 steps", tp.StartChain)
	}
	// db and convex alone need 2 × (60s + 75s) before anything after them.
	if tp.Start < 2*(135*time.Second) {
		t.Errorf("start timeout %s is shorter than db → convex", tp.Start)
	}
	if tp.Stop < 60*time.Second+stopMargin {
		t.Errorf("stop timeout %s is shorter than db's 60s grace", tp.Stop)
	}

	app := &model.Appliance{
		Name: "x",
		Services: map[string]*model.Service{
			"a": {Name: "a", StopGracePeriod: 20 * time.Second, Healthcheck: &model.Healthcheck{StartPeriod: 30 * time.Second, Interval: time.Second, Timeout: time.Second, Retries: 2}},
			"b": {Name: "b", StopGracePeriod: 5 * time.Second, DependsOn: map[string]model.Dependency{"a": {Condition: model.ConditionHealthy, Required: true}}},
			"c": {Name: "c", StopGracePeriod: 7 * time.Second, DependsOn: map[string]model.Dependency{"a": {Condition: model.ConditionHealthy, Required: true}}},
		},
		Jobs: []*model.Job{{Name: "migrate", Service: "a", After: []string{"a"}, Before: []string{"b"}, Timeout: 2 * time.Minute}},
	}
	tp, err = Timeouts(app)
	if err != nil {
		t.Fatal(err)
	}
	// a: 30s + 2×2s + 10s = 44s; migrate: 120s + 10s; b: 10s.
	if want := 44*time.Second + 130*time.Second + 10*time.Second + startMargin; tp.Start != want {
		t.Errorf("start = %s, want %s (chain %v)", tp.Start, want, tp.StartChain)
	}
	// Levels stop dependants first: {b} (migrate has no grace) ... {c,...}, {a}.
	var sum time.Duration
	for _, l := range tp.StopLevels {
		_, d, _ := strings.Cut(l, " ")
		dd, _ := time.ParseDuration(d)
		sum += dd + stopSlack
	}
	if tp.Stop != sum+stopMargin || sum < 20*time.Second+7*time.Second {
		t.Errorf("stop = %s from levels %v", tp.Stop, tp.StopLevels)
	}
}

func TestExecLine(t *testing.T) {
	got := execLine([]string{"/usr/local/bin/outpost", "run", "-f", "/etc/outpost/a b/compose.yml", "--env-file", `50%$off"x`, ""})
	want := `/usr/local/bin/outpost run -f "/etc/outpost/a b/compose.yml" --env-file "50%%$$off\"x" ""`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestLayoutAndRenderRefuseBadNames(t *testing.T) {
	if _, err := LayoutFor("Bad Name", ""); err == nil {
		t.Error("invalid appliance name accepted")
	}
	if _, err := LayoutFor(strings.Repeat("a", 30), ""); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Errorf("long user name: %v", err)
	}
	l, err := LayoutFor("outpost-demo", "")
	if err != nil || l.UnitName != "outpost-demo" || l.User != "outpost-demo" || l.StateDir != "/var/lib/outpost/outpost-demo" {
		t.Errorf("layout %+v %v", l, err)
	}
	l, _ = LayoutFor("shop", "")
	if l.UnitName != "outpost-shop" || l.SocketPath() != "/run/outpost/shop/outpost/outpost.sock" {
		t.Errorf("layout %+v", l)
	}
	bad := Unit{Layout: l}
	bad.User = "a$b"
	if _, err := Render(bad); err == nil {
		t.Error("user with $ accepted")
	}
	bad = Unit{Layout: l}
	bad.RuntimeDir = "/tmp/x"
	if _, err := Render(bad); err == nil {
		t.Error("runtime dir outside /run accepted")
	}
}

func TestParseShow(t *testing.T) {
	st := parseShow("outpost-x.service", "ActiveEnterTimestamp=@1700000000\nLoadState=loaded\nActiveState=active\nSubState=running\nStatusText=x healthy (revision 2)\nMainPID=42\nNRestarts=1\nUser=outpost-x\n")
	if !st.Installed() || st.MainPID != 42 || st.NRestarts != 1 || st.StatusText != "x healthy (revision 2)" || st.ActiveSince.Unix() != 1700000000 {
		t.Errorf("%+v", st)
	}
	if parseShow("u", "LoadState=not-found\nActiveState=inactive\nActiveEnterTimestamp=@5\n").Installed() {
		t.Error("not-found counted as installed")
	}
}

func TestHardNoFile(t *testing.T) {
	app := &model.Appliance{Services: map[string]*model.Service{"convex": {Ulimits: map[string]model.Ulimit{"nofile": {Soft: 100000, Hard: 200000}}}}}
	if got := HardNoFile(app, 0); got != 200000 {
		t.Errorf("uncapped: %d", got)
	}
	if got := HardNoFile(app, 20000); got != 20000 {
		t.Errorf("capped: %d", got)
	}
	if got := HardNoFile(&model.Appliance{}, 0); got != DefaultNoFile {
		t.Errorf("default: %d", got)
	}
}
