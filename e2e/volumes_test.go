//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// volumesWriter is a service that keeps running on volume %[3]s, which it
// hands to uid 1000.
const volumesWriter = `
name: %[1]s
services:
  writer:
    image: %[2]s
    user: "0"
    entrypoint: ["sh", "-c", "chown 1000:1000 /data && chmod 750 /data && trap 'exit 0' TERM INT; while :; do sleep 0.2; done"]
    volumes: [%[3]s:/data]
    stop_grace_period: 3s
`

// volumesV1 has the writer's data (written as uid 1000) in olddata;
// newdata and otherdata are declared but unused.
const volumesV1 = volumesWriter + `
volumes:
  olddata: {}
  newdata: {}
  otherdata: {}
`

// volumesV2 moves the writer onto newdata; olddata is kept as legacy.
const volumesV2 = volumesWriter + `
volumes:
  newdata: {}
  otherdata: {}
x-outpost:
  volumes:
    legacy: [olddata]
    migrations:
      - {from: olddata, to: newdata}
`

// volumeListing lists a volume's entries (owner, mode, type, link target)
// and file digests, from a throwaway container, leaving out Outpost's
// markers.
func volumeListing(t *testing.T, img, volume string) string {
	t.Helper()
	out := podman(t, "run", "--rm", "--user", "0", "-v", volume+":/v:ro", "--entrypoint", "sh", img, "-c",
		`cd /v && stat -c 'root %u:%g %a' . && find . -mindepth 1 ! -name '.outpost-migrat*' -printf '%p %U:%G %m %y %l %T@\n' | sort && find . -type f ! -name '.outpost-migrat*' -exec sha256sum {} + | sort`)
	return out
}

type migrateResult struct {
	From, To string
	Files    int64
	Bytes    int64
	Checksum string
	Skipped  bool
}

type volumeInfo struct {
	Appliance   string
	Name        string
	Services    []string
	Size        int64
	Exists      bool
	LegacySince *time.Time `json:"legacy_since"`
	MigratedTo  []string   `json:"migrated_to"`
	Unrecorded  bool
}

func (h *harness) volumes(args ...string) map[string]volumeInfo {
	h.t.Helper()
	r := h.must(2*time.Minute, append([]string{"volumes", "--json"}, args...)...)
	var infos []volumeInfo
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil {
		h.t.Fatalf("decoding volumes: %v\n%s", err, r.stdout)
	}
	out := map[string]volumeInfo{}
	for _, v := range infos {
		out[v.Name] = v
	}
	return out
}

func volumeExists(name string) bool {
	return exec.Command("podman", "volume", "exists", name).Run() == nil
}

// A volume written by uid 1000 is migrated with owners, modes, links and
// content intact, the source kept; a second run is a no-op; a populated
// destination is refused; then, with the appliance on the new volume, the
// old one becomes legacy and `volumes prune --legacy` removes it only with
// every guard satisfied, recording who did it.
func TestVolumeMigrationAndLegacyPrune(t *testing.T) {
	img := postgresImage(t)
	h := newHarness(t)
	name := randName("ovol")
	cleanupAppliance(h, name)
	old, nw, other := name+"_olddata", name+"_newdata", name+"_otherdata"
	v1 := h.write("v1.yml", fmt.Sprintf(volumesV1, name, img, "olddata"))
	h.must(5*time.Minute, "up", "-f", v1)

	// Data written by uid 1000 inside the container.
	podman(t, "exec", "--user", "1000:1000", name+"-writer", "sh", "-c",
		`set -e; mkdir -p /data/sub/deep; echo hello > /data/sub/file; chmod 640 /data/sub/file
		 head -c 300000 /dev/urandom > /data/sub/deep/blob; ln -s sub/file /data/link; touch -d '2021-05-06 07:08:09' /data/sub/file`)
	if out := podman(t, "exec", name+"-writer", "stat", "-c", "%u:%g %a", "/data/sub/file"); out != "1000:1000 640" {
		t.Fatalf("test setup: file is %s", out)
	}

	// Migrating while the writer runs is refused.
	r := h.run(3*time.Minute, "volumes", "migrate", "--name", name, "olddata", "newdata")
	if r.code == 0 || !strings.Contains(r.stderr, "writer still running") {
		t.Fatalf("migrate with the writer running: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	h.must(3*time.Minute, "down", "--name", name)
	before := volumeListing(t, img, old)

	r = h.must(5*time.Minute, "volumes", "migrate", "--name", name, "--json", "olddata", "newdata")
	var res []migrateResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 {
		t.Fatalf("decoding migrate result: %v\n%s", err, r.stdout)
	}
	if res[0].Skipped || res[0].Files != 5 || res[0].Bytes != 300006 || !strings.HasPrefix(res[0].Checksum, "sha256:") {
		t.Fatalf("first migration: %+v", res[0])
	}
	after := volumeListing(t, img, nw)
	t.Logf("migrated %+v; destination:\n%s", res[0], after)
	if after != before {
		t.Fatalf("copy differs from the source\nsource:\n%s\ncopy:\n%s", before, after)
	}
	if !strings.Contains(after, "root 1000:1000 750") || !strings.Contains(after, "./sub/file 1000:1000 640 f") || !strings.Contains(after, "./link 1000:1000 777 l sub/file") {
		t.Fatalf("owners or links not preserved:\n%s", after)
	}
	if got := volumeListing(t, img, old); got != before {
		t.Fatalf("source changed:\n%s\n---\n%s", before, got)
	}
	marker := podman(t, "run", "--rm", "--user", "0", "-v", nw+":/v:ro", "--entrypoint", "cat", img, "/v/.outpost-migrated-from-"+old)
	if !strings.Contains(marker, res[0].Checksum) {
		t.Fatalf("marker does not record the checksum %s:\n%s", res[0].Checksum, marker)
	}

	// A second run is a no-op.
	r = h.must(5*time.Minute, "volumes", "migrate", "--name", name, "--json", "olddata", "newdata")
	var res2 []migrateResult
	if err := json.Unmarshal([]byte(r.stdout), &res2); err != nil || len(res2) != 1 || !res2[0].Skipped || res2[0].Checksum != res[0].Checksum {
		t.Fatalf("second migration is not a no-op: %v\n%s", err, r.stdout)
	}
	if got := volumeListing(t, img, nw); got != after {
		t.Fatalf("second run changed the destination")
	}

	// The old revision writing the source again (after a rolled-back
	// upgrade) makes the unused copy stale: it is copied again.
	podman(t, "run", "--rm", "--user", "1000:1000", "-v", old+":/v", "--entrypoint", "sh", img, "-c", "echo late > /v/sub/late")
	r = h.must(5*time.Minute, "volumes", "migrate", "--name", name, "--json", "olddata", "newdata")
	var res3 []migrateResult
	if err := json.Unmarshal([]byte(r.stdout), &res3); err != nil || len(res3) != 1 || res3[0].Skipped || res3[0].Files != 6 {
		t.Fatalf("stale copy not refreshed: %v\n%s", err, r.stdout)
	}
	if src, dst := volumeListing(t, img, old), volumeListing(t, img, nw); src != dst {
		t.Fatalf("refreshed copy differs:\n%s\n---\n%s", src, dst)
	}
	// Both written since the copy: refused, nothing touched.
	podman(t, "run", "--rm", "--user", "1000:1000", "-v", old+":/v", "--entrypoint", "sh", img, "-c", "echo later > /v/sub/late")
	podman(t, "run", "--rm", "--user", "1000:1000", "-v", nw+":/v", "--entrypoint", "sh", img, "-c", "echo mine > /v/sub/new")
	diverged := volumeListing(t, img, nw)
	r = h.run(5*time.Minute, "volumes", "migrate", "--name", name, "olddata", "newdata")
	if r.code == 0 || !strings.Contains(r.stderr, "both changed") || volumeListing(t, img, nw) != diverged {
		t.Fatalf("diverged volumes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A populated destination is refused and left alone.
	podman(t, "run", "--rm", "--user", "0", "-v", other+":/v", "--entrypoint", "sh", img, "-c", "echo precious > /v/precious")
	r = h.run(5*time.Minute, "volumes", "migrate", "--name", name, "olddata", "otherdata")
	if r.code == 0 || !strings.Contains(r.stderr, "already populated") || !strings.Contains(r.stderr, old) || !strings.Contains(r.stderr, other) {
		t.Fatalf("populated destination: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := podman(t, "run", "--rm", "-v", other+":/v:ro", "--entrypoint", "cat", img, "/v/precious"); got != "precious" {
		t.Fatalf("populated destination changed: %q", got)
	}

	// v2 runs on the copy.
	v2 := h.write("v2.yml", fmt.Sprintf(volumesV2, name, img, "newdata"))
	h.must(5*time.Minute, "up", "-f", v2)
	if got := podman(t, "exec", name+"-writer", "cat", "/data/sub/file"); got != "hello" {
		t.Fatalf("v2 reads %q from the migrated volume", got)
	}

	// Not legacy yet: nothing to prune, and naming it is refused.
	r = h.run(2*time.Minute, "volumes", "prune", "--legacy", "--name", name, "--older-than", "0s", "--yes", old)
	if r.code == 0 || !strings.Contains(r.stderr, "not legacy") || !volumeExists(old) {
		t.Fatalf("prune of a volume not marked legacy: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	h.must(time.Minute, "volumes", "mark-legacy", "--name", name, old)
	// A volume the active revision mounts cannot be marked.
	if r := h.run(time.Minute, "volumes", "mark-legacy", "--name", name, nw); r.code == 0 || !strings.Contains(r.stderr, "mounted by writer") {
		t.Fatalf("mark-legacy of a mounted volume: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("volumes:\n%s", h.must(2*time.Minute, "volumes", "--name", name).stdout)
	vols := h.volumes("--name", name)
	if vols[old].LegacySince == nil || vols[nw].LegacySince != nil || len(vols[old].MigratedTo) != 1 || vols[old].MigratedTo[0] != nw {
		t.Fatalf("volumes listing: %+v", vols)
	}
	if vols[nw].Size < 300000 || !vols[nw].Exists || len(vols[nw].Services) != 1 || vols[nw].Services[0] != "writer" {
		t.Fatalf("volume %s: %+v", nw, vols[nw])
	}

	refused := func(what string, want string, args ...string) {
		t.Helper()
		r := h.run(2*time.Minute, append([]string{"volumes", "prune", "--legacy", "--name", name}, args...)...)
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, want) {
			t.Fatalf("%s: exit %d, want an error with %q\n%s%s", what, r.code, want, r.stdout, r.stderr)
		}
		for _, v := range []string{old, nw, other} {
			if !volumeExists(v) {
				t.Fatalf("%s removed %s", what, v)
			}
		}
	}
	// The default age (720h) keeps a volume legacy for seconds.
	r = h.must(2*time.Minute, "volumes", "prune", "--legacy", "--name", name)
	if !strings.Contains(r.stdout, "keep "+old) || !strings.Contains(r.stdout, "younger than 720h") {
		t.Fatalf("prune with the default age:\n%s", r.stdout)
	}
	refused("too young, named", "younger than", "--yes", old)
	refused("no confirmation", "typed confirmation", "--older-than", "0s")
	refused("--yes without names", "exact names", "--older-than", "0s", "--yes")
	refused("non-legacy volume named", "not legacy", "--older-than", "0s", "--yes", old, nw)
	refused("unknown volume", "not a volume of", "--older-than", "0s", "--yes", "nope")
	// A volume with the appliance's label that Outpost did not record is
	// listed but never pruned.
	stray := name + "_stray"
	podman(t, "volume", "create", "--label", "io.outpost.appliance="+name, stray)
	if v := h.volumes("--name", name)[stray]; !v.Unrecorded || !v.Exists {
		t.Fatalf("stray volume listed as %+v", v)
	}
	refused("volume not in the inventory", "not a volume of", "--older-than", "0s", "--yes", stray)

	r = h.run(2*time.Minute, "volumes", "prune", "--legacy", "--name", name, "--older-than", "0s", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stdout, "would remove "+old) || !volumeExists(old) {
		t.Fatalf("dry run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = h.must(2*time.Minute, "volumes", "prune", "--legacy", "--name", name, "--older-than", "0s", "--yes", old)
	if !strings.Contains(r.stdout, "removed "+old) || volumeExists(old) {
		t.Fatalf("prune --yes %s:\n%s%s", old, r.stdout, r.stderr)
	}
	if !volumeExists(nw) || !volumeExists(other) {
		t.Fatal("prune removed more than the named legacy volume")
	}
	if got := podman(t, "exec", name+"-writer", "cat", "/data/sub/file"); got != "hello" {
		t.Fatalf("after prune the service reads %q", got)
	}
	t.Logf("prune:\n%s", r.stdout)
	r = h.must(time.Minute, "volumes", "--removed", "--json", "--name", name)
	var removals []struct {
		Name      string
		RemovedBy string
		Reason    string
	}
	if err := json.Unmarshal([]byte(r.stdout), &removals); err != nil || len(removals) != 1 || removals[0].Name != old ||
		!strings.Contains(removals[0].RemovedBy, "--yes") || !strings.Contains(removals[0].Reason, "verified copy in "+nw) {
		t.Fatalf("removal audit: %v\n%s", err, r.stdout)
	}
	if _, ok := h.volumes("--name", name)[old]; ok {
		t.Fatalf("%s is still listed", old)
	}

	// At a terminal the names are typed. otherdata, which no migration
	// reads, needs no verified replacement once legacy.
	h.must(time.Minute, "volumes", "mark-legacy", "--name", name, other)
	r = h.runTTY(2*time.Minute, "nope\n", "volumes", "prune", "--legacy", "--name", name, "--older-than", "0s", other)
	if r.code == 0 || !strings.Contains(r.stdout, "did not match") || !volumeExists(other) {
		t.Fatalf("prune with a wrong typed confirmation: exit %d\n%s", r.code, r.stdout)
	}
	r = h.runTTY(2*time.Minute, other+"\n", "volumes", "prune", "--legacy", "--name", name, "--older-than", "0s", other)
	if r.code != 0 || !strings.Contains(r.stdout, "removed "+other) || volumeExists(other) || !volumeExists(nw) {
		t.Fatalf("prune with a typed confirmation: exit %d\n%s", r.code, r.stdout)
	}
	r = h.must(time.Minute, "volumes", "--removed", "--json", "--name", name)
	if err := json.Unmarshal([]byte(r.stdout), &removals); err != nil || len(removals) != 2 || removals[1].Name != other ||
		!strings.Contains(removals[1].RemovedBy, "typed confirmation") || !strings.Contains(removals[1].Reason, "no migration reads it") {
		t.Fatalf("removal audit: %v\n%s", err, r.stdout)
	}

	// The migration, still declared, is done: with its source pruned it is
	// skipped, not failed.
	h.must(3*time.Minute, "down", "--name", name)
	r = h.must(5*time.Minute, "volumes", "migrate", "--name", name, "--json")
	var res4 []migrateResult
	if err := json.Unmarshal([]byte(r.stdout), &res4); err != nil || len(res4) != 1 || !res4[0].Skipped {
		t.Fatalf("migration after its source was pruned: %v\n%s", err, r.stdout)
	}
}

// runTTY runs outpost with a terminal as its standard input (util-linux
// script), typing input; output and errors come back together in stdout.
func (h *harness) runTTY(timeout time.Duration, input string, args ...string) result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line := "'" + bin + "'"
	for _, a := range args {
		line += " '" + a + "'"
	}
	cmd := exec.CommandContext(ctx, "script", "-qec", line, "/dev/null")
	cmd.Dir, cmd.Env, cmd.Stdin = h.dir, h.env(), strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	res := result{stdout: string(out)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("running outpost %v at a terminal: %v", args, err)
	}
	if ctx.Err() != nil {
		h.t.Fatalf("outpost %v did not finish within %s:\n%s", args, timeout, out)
	}
	return res
}

// volumesPostgres runs a real PostgreSQL on the volume key %[3]s.
const volumesPostgres = `
name: %[1]s
services:
  db:
    image: %[2]s
    volumes: [%[3]s:/var/lib/postgresql/data]
    stop_grace_period: 20s
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 1s
      timeout: 5s
      start_period: 60s
volumes:
  pgold: {}
  pgnew: {}
`

// A PostgreSQL data directory (owned by the postgres user, mode 0700, which
// the server checks) migrated into a new volume starts there with every row.
func TestVolumeMigrationPostgres(t *testing.T) {
	img := postgresImage(t)
	h := newHarness(t)
	name := randName("ovpg")
	cleanupAppliance(h, name)
	h.must(5*time.Minute, "up", "-f", h.write("v1.yml", fmt.Sprintf(volumesPostgres, name, img, "pgold")))
	db := name + "-db"
	psql(t, db, "postgres", "CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
	want := psql(t, db, "postgres", "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items")
	owner := podman(t, "exec", db, "stat", "-c", "%U %a", "/var/lib/postgresql/data")
	h.must(3*time.Minute, "down", "--name", name)

	r := h.must(5*time.Minute, "volumes", "migrate", "--name", name, "pgold", "pgnew")
	t.Logf("migrate: %s", r.stdout)
	h.must(5*time.Minute, "up", "-f", h.write("v2.yml", fmt.Sprintf(volumesPostgres, name, img, "pgnew")))
	if got := psql(t, db, "postgres", "SELECT count(*), md5(string_agg(body, ',' ORDER BY id)) FROM items"); got != want {
		t.Fatalf("rows after migration: %q, want %q", got, want)
	}
	if got := podman(t, "exec", db, "stat", "-c", "%U %a", "/var/lib/postgresql/data"); got != owner || !strings.HasPrefix(got, "postgres ") {
		t.Fatalf("data directory is %q in the copy, was %q", got, owner)
	}
	if !volumeExists(name + "_pgold") {
		t.Fatal("the source volume was not kept")
	}
}
