package export_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containers/podman/v5/pkg/systemd/parser"
	"github.com/containers/podman/v5/pkg/systemd/quadlet"

	"github.com/outpostdev/outpost/appliance/export"
	"github.com/outpostdev/outpost/appliance/model"
)

// generate runs Podman's own Quadlet conversion (the code of its systemd
// generator, Podman 5.7) over the files and returns the generated
// service units by file name; a key Quadlet does not know, or a value it
// refuses, fails the test.
func generate(t *testing.T, files []export.QuadletFile) map[string]string {
	t.Helper()
	dir := t.TempDir()
	var units []*parser.UnitFile
	for _, f := range files {
		path := filepath.Join(dir, f.Name)
		if err := os.WriteFile(path, []byte(f.Content), 0o644); err != nil {
			t.Fatal(err)
		}
		u, err := parser.ParseUnitFile(path)
		if err != nil {
			t.Fatalf("%s does not parse: %v", f.Name, err)
		}
		units = append(units, u)
	}
	info := map[string]*quadlet.UnitInfo{}
	for _, u := range units {
		name, err := quadlet.GetUnitServiceName(u)
		if err != nil {
			t.Fatalf("%s: %v", u.Filename, err)
		}
		ui := &quadlet.UnitInfo{ServiceName: name}
		if strings.HasSuffix(u.Filename, ".container") {
			ui.ResourceName = quadlet.GetContainerResourceName(u)
		}
		info[u.Filename] = ui
	}
	out := map[string]string{}
	for _, u := range units {
		var (
			svc       *parser.UnitFile
			warn, err error
		)
		switch filepath.Ext(u.Filename) {
		case ".container":
			svc, warn, err = quadlet.ConvertContainer(u, info, true)
		case ".volume":
			svc, warn, err = quadlet.ConvertVolume(u, info, true)
		case ".network":
			svc, warn, err = quadlet.ConvertNetwork(u, info, true)
		default:
			t.Fatalf("unexpected unit %s", u.Filename)
		}
		if err != nil {
			t.Fatalf("quadlet refuses %s: %v\n%s", u.Filename, err, contentOf(files, u.Filename))
		}
		if warn != nil {
			t.Errorf("quadlet warns on %s: %v", u.Filename, warn)
		}
		text, err := svc.ToString()
		if err != nil {
			t.Fatal(err)
		}
		out[u.Filename] = strings.ReplaceAll(text, dir, "$DIR")
	}
	return out
}

// normalize sorts the words of each ExecStart after the podman verb:
// Quadlet emits some option groups in map order.
func normalize(unit string) string {
	lines := strings.Split(unit, "\n")
	for i, l := range lines {
		rest, ok := strings.CutPrefix(l, "ExecStart=")
		if !ok {
			continue
		}
		words := strings.Fields(rest)
		if len(words) > 3 {
			head, tail := words[:3], slices.Clone(words[3:])
			slices.Sort(tail)
			lines[i] = "ExecStart(words after the third sorted)=" + strings.Join(append(head, tail...), " ")
		}
	}
	return strings.Join(lines, "\n")
}

func contentOf(files []export.QuadletFile, name string) string {
	for _, f := range files {
		if f.Name == name {
			return f.Content
		}
	}
	return ""
}

func TestQuadletGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		app  func() *model.Appliance
		// run: what the generated service unit must hold, by unit file.
		run map[string][]string
	}{
		{"demo", func() *model.Appliance { return demo(t) }, map[string][]string{
			"outpost-demo-api.container": {"--sdnotify=healthy", "--network-alias api", "--network outpost-demo-default", "--health-on-failure kill",
				"Requires=outpost-demo-store.service", "After=outpost-demo-store.service", "Requires=outpost-demo-default-network.service"},
			"outpost-demo-store.container": {"-v outpost-demo-store-data:/data", "Requires=outpost-demo-store-data-volume.service", "--stop-timeout 10"},
			"outpost-demo-web.container":   {"--publish 127.0.0.1:18000:3000/tcp", "TimeoutStartSec=90"},
		}},
		{"rich", rich, map[string][]string{
			"tale-app-db.container": {"--secret tale-app-db-password,type=env,target=DB_PASSWORD", `--health-cmd "pg_isready\x20-U\x20tale"`,
				"--user 999:999", "--network-alias postgres", "--network tale-app-backend", "--tmpfs /run/postgresql:size=67108864", "--ulimit nofile=1024:2048"},
			"tale-app-platform.container": {`--env "TEMPLATE=hello\x20$$(NAME)"`, "Requires=tale-app-job-migrate.service", "--read-only", "--init",
				"--publish 127.0.0.1:8080:3000/tcp", "-v /srv/tale/config:/config:ro", "--memory 536870912"},
			"tale-app-job-migrate.container": {"Type=oneshot", "RemainAfterExit=yes", "Requires=tale-app-db.service", "migrate up"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			files, notes, err := export.Quadlet(c.app(), export.QuadletOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var all strings.Builder
			for _, f := range files {
				all.WriteString("=== " + f.Name + "\n" + f.Content)
			}
			gen := generate(t, files)
			for _, f := range files {
				all.WriteString("=== generated from " + f.Name + "\n" + normalize(gen[f.Name]))
			}
			var nb strings.Builder
			for _, n := range notes {
				nb.WriteString(n.String() + "\n")
			}
			golden(t, "quadlet-"+c.name+".golden", []byte(all.String()))
			for unit, want := range c.run {
				got := gen[unit]
				for _, w := range want {
					if !strings.Contains(got, w) {
						t.Errorf("%s: the generated service lacks %q:\n%s", unit, w, got)
					}
				}
			}
			golden(t, "quadlet-"+c.name+".notes.golden", []byte(nb.String()))
		})
	}
}
