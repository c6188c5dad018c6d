//go:build e2e

package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// upgradePostgres is real PostgreSQL and a rotatable app (the same image)
// that reads it over the network every half second and writes what it
// served to /tmp/served; its health is that file being fresh (Compose
// interpolates the file: the shell's $ are written $$). %[1]s is
// the name, %[2]s the image, %[3]s the app's version, %[4]s extra
// x-outpost keys, %[5]s extra top-level volumes.
const upgradePostgres = `
name: %[1]s
x-outpost:
  version: "%[3]s"
  services:
    db: {role: stateful}
    app: {role: rotatable}
%[4]s
services:
  db:
    image: %[2]s
    volumes: [pgdata:/var/lib/postgresql/data]
    stop_grace_period: 20s
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 1s
      timeout: 5s
      start_period: 60s
  app:
    image: %[2]s
    entrypoint: ["sh", "-c"]
    command:
      - |
        trap 'exit 0' TERM INT
        psql -h db -U postgres -d postgres -qc 'CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, body text)' || exit 1
        while :; do
          n=$$(psql -h db -U postgres -d postgres -Atc "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items") && echo "$$APP_VERSION $$n" > /tmp/served.new && mv /tmp/served.new /tmp/served
          sleep 0.5
        done
    environment:
      APP_VERSION: "%[3]s"
    depends_on:
      db: {condition: service_healthy}
    healthcheck:
      test: ["CMD", "sh", "-c", "test $$(( $$(date +%%s) - $$(stat -c %%Y /tmp/served) )) -lt 5"]
      interval: 1s
      start_period: 30s
    stop_grace_period: 3s
volumes:
  pgdata: {}
%[5]s`

// An upgrade on real PostgreSQL: v2 runs a schema change as an upgrade job
// and changes the app's environment (so a volume migration v2 declares
// whose source never existed is skipped, and said so); every row survives
// and is served. Then an upgrade whose job fails after changing nothing
// rolls the whole stack back with every row still there and served.
func TestUpgradePostgres(t *testing.T) {
	img := postgresImage(t)
	h := newHarness(t)
	name := randName("upg")
	cleanupAppliance(h, name)
	schemaJob := `  jobs:
    schema:
      service: app
      command: ["psql -h db -U postgres -d postgres -v ON_ERROR_STOP=1 -c \"ALTER TABLE items ADD COLUMN note text NOT NULL DEFAULT 'v2'\""]
      after: [db]
      before: [app]
      when: upgrade
      timeout: 2m
`
	// The old-data volume was never created: no revision mounted it.
	noSource := `  volumes:
    legacy: [old-data]
    migrations:
      - {from: old-data, to: pgdata}
`
	v1 := h.write("v1.yml", fmt.Sprintf(upgradePostgres, name, img, "1", "", ""))
	v2 := h.write("v2.yml", fmt.Sprintf(upgradePostgres, name, img, "2", schemaJob+noSource, "  old-data: {}\n"))
	failing := `  jobs:
    broken:
      service: app
      command: ["echo checking; exit 3"]
      after: [db]
      before: [app]
      when: upgrade
`
	v3 := h.write("v3.yml", fmt.Sprintf(upgradePostgres, name, img, "3", failing+noSource, "  old-data: {}\n"))

	h.must(5*time.Minute, "up", "-f", v1)
	db, app := name+"-db", name+"-app"
	psql(t, db, "postgres", "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	rows := psql(t, db, "postgres", "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items")
	if !strings.HasPrefix(rows, "20000|") {
		t.Fatalf("rows written: %q", rows)
	}
	served := func(version string) {
		t.Helper()
		eventually(t, time.Minute, "app "+version+" serving every row", func() error {
			got, err := podmanOut("exec", app, "cat", "/tmp/served")
			if want := version + " " + rows; err != nil || got != want {
				return fmt.Errorf("app serves %q (%v), want %q", got, err, want)
			}
			return nil
		})
	}
	served("1")

	r := h.must(10*time.Minute, "upgrade", "-f", v2)
	t.Logf("upgrade:\n%s\n%s", r.stdout, r.stderr)
	if !strings.Contains(r.stdout, "revision 1 → 2") || !strings.Contains(r.stdout, "snapshot taken before: ") {
		t.Fatalf("upgrade output:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "volume migration old-data → pgdata: no source volume, nothing to copy") {
		t.Errorf("the upgrade does not say the migration without a source was skipped:\n%s", r.stderr)
	}
	if volumeExists(name + "_old-data") {
		t.Error("the skipped migration's source volume was created")
	}
	if got := psql(t, db, "postgres", "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items"); got != rows {
		t.Fatalf("rows after the upgrade: %q, want %q", got, rows)
	}
	if got := psql(t, db, "postgres", "SELECT count(*) FROM items WHERE note = 'v2'"); got != "20000" {
		t.Fatalf("the schema change is missing: %q rows have the new column", got)
	}
	logs := h.must(time.Minute, "logs", "--name", name, "schema")
	if !strings.Contains(logs.stdout, "ALTER TABLE") {
		t.Errorf("schema job output not captured: %q", logs.stdout)
	}
	served("2")
	if got := podman(t, "ps", "--filter", "label=io.outpost.appliance="+name, "--format", "{{.Names}}"); strings.Join(sorted(lines(got)), " ") != app+" "+db {
		t.Fatalf("containers after the upgrade: %s", got)
	}

	// The same migration declared again is skipped again.
	r = h.run(10*time.Minute, "upgrade", "-f", v3)
	if r.code == 0 || !strings.Contains(r.stderr, `"broken" job exited with code 3`) || !strings.Contains(r.stderr, "rolled back to revision 2") {
		t.Fatalf("failing upgrade: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "no source volume, nothing to copy") {
		t.Errorf("the failing upgrade did not skip the migration again:\n%s", r.stderr)
	}
	if got := psql(t, db, "postgres", "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items"); got != rows {
		t.Fatalf("rows after the rollback: %q, want %q", got, rows)
	}
	if got := psql(t, db, "postgres", "SELECT count(*) FROM items WHERE note = 'v2'"); got != "20000" {
		t.Fatalf("the schema change is gone after the rollback: %q", got)
	}
	served("2")
	if env := podman(t, "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", app); !strings.Contains(env, "APP_VERSION=2") {
		t.Fatalf("the app is not back on revision 2's environment:\n%s", env)
	}
	// One running copy of each service (Podman 4.3 prints "Up …" as the
	// state); the jobs' exited containers are kept for their logs.
	var services []string
	for _, l := range lines(podman(t, "ps", "-a", "--filter", "label=io.outpost.appliance="+name, "--format", "{{.Names}} {{.State}}")) {
		if strings.Contains(l, "-job-") {
			continue
		}
		if f := strings.Fields(l); len(f) < 2 || (f[1] != "Up" && f[1] != "running") || (f[0] != app && f[0] != db) {
			t.Fatalf("container after the rollback: %q", l)
		}
		services = append(services, l)
	}
	if len(services) != 2 {
		t.Fatalf("containers after the rollback: %q", services)
	}
	if hist := (&upgradeApp{h: h, name: name}).history(t); hist[2] != "active" || hist[1] != "superseded" {
		t.Fatalf("history after the rollback: %v", hist)
	}
}

// podmanOut runs podman and returns its trimmed output and error.
func podmanOut(args ...string) (string, error) {
	out, err := exec.Command("podman", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
