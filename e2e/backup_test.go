//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// postgresImage is a real PostgreSQL 15 from Debian's packages, built
// offline by `make e2e-postgres` (scripts/e2e-postgres-image.sh).
func postgresImage(t *testing.T) string {
	t.Helper()
	img := os.Getenv("OUTPOST_E2E_POSTGRES_IMAGE")
	if img == "" {
		img = "localhost/outpost-e2e-postgres:15"
	}
	if exec.Command("podman", "image", "exists", img).Run() != nil {
		t.Fatalf("image %s is missing: build it with `make e2e-postgres` as root (debootstrap, offline from the Debian mirror)", img)
	}
	return img
}

// backupCompose is a database with a dump hook and a file service that
// writes its volume without one (so it is held for the copy).
const backupCompose = `
name: %[1]s
services:
  db:
    image: %[2]s
    volumes: [pgdata:/var/lib/postgresql/data]
    stop_grace_period: 20s
    restart: always
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 1s
      timeout: 5s
      start_period: 60s
    x-outpost:
      backup:
        command: [pg_dumpall, -U, postgres]
        restore: [psql, -U, postgres, -d, postgres, -q]
  files:
    image: %[2]s
    user: "0"
    entrypoint: ["sh", "-c", "trap 'exit 0' TERM INT; mkdir -p /data; while :; do sleep 0.2; done"]
    volumes: [filedata:/data]
    restart: always
    stop_grace_period: 5s
    healthcheck:
      test: ["CMD", "test", "-d", "/data"]
      interval: 1s
    depends_on:
      db: {condition: service_healthy}
volumes:
  pgdata: {}
  filedata: {}
`

type backupResult struct {
	Name     string
	Path     string
	Size     int64
	Hooks    []string
	Volumes  map[string]string
	Held     map[string]string
	Verified bool
}

type snapshotInfo struct {
	Name       string
	Path       string
	Complete   bool
	Revision   int64
	Size       int64
	VerifiedAt time.Time `json:"verified_at"`
}

func randName(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// psql runs statements in a database of the appliance's db container.
func psql(t *testing.T, container, db string, stmts ...string) string {
	t.Helper()
	args := []string{"exec", container, "psql", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atq"}
	for _, s := range stmts {
		args = append(args, "-c", s)
	}
	return podman(t, args...)
}

// fileState lists every entry of the files volume with owner, mode, size
// and, for files, sha256.
func fileState(t *testing.T, container string) string {
	t.Helper()
	return podman(t, "exec", container, "sh", "-c",
		`cd /data && find . -printf '%p %U:%G %m %s %y %l\n' | sort && find . -type f -exec sha256sum {} + | sort`)
}

func (h *harness) backups(args ...string) []snapshotInfo {
	h.t.Helper()
	r := h.must(time.Minute, append([]string{"backups", "--json"}, args...)...)
	var out []snapshotInfo
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		h.t.Fatalf("decoding backups: %v\n%s", err, r.stdout)
	}
	return out
}

func removeVolumes(t *testing.T, names ...string) {
	t.Helper()
	for _, v := range names {
		podman(t, "volume", "rm", v)
	}
}

// Data written to PostgreSQL and to a plain volume survives losing the
// volumes, and restores on a second, fresh state directory; a corrupted
// snapshot is refused before anything is touched; an interrupted one is
// never listed.
func TestBackupRestorePostgres(t *testing.T) {
	img := postgresImage(t)
	h := newHarness(t)
	name := randName("obk")
	cleanupAppliance(h, name)
	compose := h.write("compose.yml", fmt.Sprintf(backupCompose, name, img))
	h.must(10*time.Minute, "up", "-f", compose)
	db, files := name+"-db", name+"-files"
	vols := []string{name + "_pgdata", name + "_filedata"}

	psql(t, db, "postgres",
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
		"CREATE DATABASE shop")
	psql(t, db, "shop", "CREATE TABLE orders (n int)", "INSERT INTO orders VALUES (1), (2), (3)")
	const rowsQuery = "SELECT count(*), sum(id), md5(string_agg(body, '' ORDER BY id)) FROM items"
	rowsBefore := psql(t, db, "postgres", rowsQuery)
	ordersBefore := psql(t, db, "shop", "SELECT string_agg(n::text, ',' ORDER BY n) FROM orders")
	podman(t, "exec", files, "sh", "-c", `set -e
		head -c 30000000 /dev/urandom > /data/big
		chown 1234:5678 /data/big && chmod 0640 /data/big
		mkdir -p /data/sub/deep && echo hello > /data/sub/deep/x && ln -s sub/deep/x /data/link
		mkdir /data/priv && echo secret > /data/priv/key && chown -R 999:999 /data/priv && chmod 0700 /data/priv && chmod 0400 /data/priv/key
		ln /data/sub/deep/x /data/hardlink`)
	filesBefore := fileState(t, files)

	// Back up: the hook dumps the database while it runs; the file
	// service is stopped (rootless cgroups v1 cannot pause) for its copy
	// and is healthy again afterwards.
	start := time.Now()
	r := h.must(10*time.Minute, "backup", "--json")
	var res backupResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("decoding backup result: %v\n%s", err, r.stdout)
	}
	t.Logf("backup of %d bytes took %s", res.Size, time.Since(start).Round(time.Millisecond))
	if !slices.Equal(res.Hooks, []string{"db"}) || !res.Verified ||
		res.Volumes[name+"_pgdata"] != "live-hook" || (res.Volumes[name+"_filedata"] != "stopped" && res.Volumes[name+"_filedata"] != "paused") {
		t.Fatalf("backup result: %+v", res)
	}
	if err := allHealthy(h.status(), 2); err != nil {
		t.Fatalf("after backup: %v", err)
	}
	if dump, err := os.ReadFile(filepath.Join(res.Path, "hooks", "db.out")); err != nil || !strings.Contains(string(dump), "CREATE DATABASE shop") {
		t.Fatalf("dump: %v %.200s", err, dump)
	}
	if snaps := h.backups(); len(snaps) != 1 || snaps[0].Path != res.Path || !snaps[0].Complete || snaps[0].VerifiedAt.IsZero() {
		t.Fatalf("backups: %+v", snaps)
	}

	// Changes after the snapshot, which the restore must undo.
	psql(t, db, "postgres", "INSERT INTO items VALUES (999999, 'after')")
	podman(t, "exec", files, "rm", "/data/big")

	// Refused while the appliance runs.
	if r := h.run(time.Minute, "restore", res.Path); r.code == 0 || !strings.Contains(r.stderr, "running") || !strings.Contains(r.stderr, "--stop") {
		t.Fatalf("restore while running: exit %d\n%s", r.code, r.stderr)
	}

	// A corrupted snapshot is refused before anything is touched, even
	// with --stop.
	corrupt := filepath.Join(h.dir, "corrupt")
	if out, err := exec.Command("cp", "-a", res.Path, corrupt).CombinedOutput(); err != nil {
		t.Fatalf("copying the snapshot: %v %s", err, out)
	}
	flip(t, filepath.Join(corrupt, "volumes", name+"_filedata.tar"), 10000)
	idsBefore := containerIDs(h.status())
	r = h.run(5*time.Minute, "restore", "--stop", corrupt)
	if r.code == 0 || !strings.Contains(r.stderr, "does not match its manifest") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Fatalf("restore of a corrupt snapshot: exit %d\n%s", r.code, r.stderr)
	}
	st := h.status()
	if err := allHealthy(st, 2); err != nil || !slices.Equal(containerIDs(st), idsBefore) {
		t.Fatalf("the corrupt restore touched the appliance: %v, %v -> %v", err, idsBefore, containerIDs(st))
	}
	if got := psql(t, db, "postgres", "SELECT count(*) FROM items"); got != "20001" {
		t.Fatalf("rows after the refused restore: %s", got)
	}

	// A backup killed midway is never listed as complete.
	interruptBackup(t, h, name)
	if snaps := h.backups(); len(snaps) != 1 || snaps[0].Path != res.Path {
		t.Fatalf("backups after an interrupted one: %+v", snaps)
	}
	all := h.backups("--all")
	incomplete := slices.IndexFunc(all, func(s snapshotInfo) bool { return !s.Complete })
	if len(all) != 2 || incomplete < 0 {
		t.Fatalf("backups --all after an interrupted one: %+v", all)
	}
	r = h.must(time.Minute, "backups", "prune", "--keep-last", "3")
	if !strings.Contains(r.stdout, "removed interrupted") {
		t.Fatalf("prune did not remove the interrupted snapshot:\n%s", r.stdout)
	}
	if _, err := os.Stat(res.Path); err != nil {
		t.Fatalf("prune removed the complete snapshot: %v", err)
	}

	// Lose the volumes, restore.
	h.must(5*time.Minute, "down")
	removeVolumes(t, vols...)
	start = time.Now()
	r = h.must(10*time.Minute, "restore", res.Path)
	t.Logf("restore took %s", time.Since(start).Round(time.Millisecond))
	checkRestored := func(h *harness, what string) {
		t.Helper()
		if err := allHealthy(h.status(), 2); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := psql(t, db, "postgres", rowsQuery); got != rowsBefore {
			t.Fatalf("%s: rows %q, want %q", what, got, rowsBefore)
		}
		if got := psql(t, db, "shop", "SELECT string_agg(n::text, ',' ORDER BY n) FROM orders"); got != ordersBefore {
			t.Fatalf("%s: orders %q, want %q", what, got, ordersBefore)
		}
		if got := fileState(t, files); got != filesBefore {
			t.Fatalf("%s: files differ\n got:\n%s\nwant:\n%s", what, got, filesBefore)
		}
	}
	checkRestored(h, "restore after losing the volumes")

	// A second, fresh state directory with nothing but the snapshot (and
	// the images) restores too.
	h.must(5*time.Minute, "down")
	removeVolumes(t, vols...)
	h2 := newHarness(t)
	cleanupAppliance(h2, name)
	h2.must(10*time.Minute, "restore", res.Path)
	checkRestored(h2, "restore on a fresh state directory")
	if ev := h2.events(); !slices.ContainsFunc(ev, func(e event) bool { return e.Kind == "restored" }) {
		t.Fatalf("no restored event: %+v", ev)
	}
}

// interruptBackup starts `outpost backup` and kills it once the database
// dump is on disk, midway through the snapshot, then brings the appliance
// back to its definition (the kill may leave the file service stopped).
func interruptBackup(t *testing.T, h *harness, name string) {
	t.Helper()
	cmd := exec.Command(bin, "backup")
	cmd.Dir = h.dir
	cmd.Env = h.env()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	dir := filepath.Join(h.stateDir, "backups")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		partials, _ := filepath.Glob(filepath.Join(dir, "."+name+"-*.partial", "hooks", "db.out"))
		if len(partials) > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("backup finished (%v) before it could be interrupted", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatal("no partial snapshot appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	h.must(10*time.Minute, "up", "-f", filepath.Join(h.dir, "compose.yml"))
}

func containerIDs(s statusReply) []string {
	var ids []string
	for _, svc := range s.Services {
		ids = append(ids, svc.ContainerID)
	}
	return ids
}

func flip(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// With the daemon running, backup and restore go through it: the service
// stopped for its copy is not restarted by supervision behind the
// backup's back, and the restored appliance is supervised again.
func TestBackupThroughDaemon(t *testing.T) {
	img := postgresImage(t)
	h := newHarness(t)
	name := randName("obd")
	cleanupAppliance(h, name)
	compose := h.write("compose.yml", fmt.Sprintf(backupCompose, name, img))
	d := h.daemon("-f", compose)
	eventually(t, 5*time.Minute, "appliance healthy under the daemon", func() error {
		if d.exited() {
			t.Fatalf("daemon exited: %v\n%s", d.err, h.logs())
		}
		r := h.run(time.Minute, "status", "--json")
		if r.code != 0 {
			return fmt.Errorf("status: %s", r.stderr)
		}
		return allHealthy(h.status(), 2)
	})
	psql(t, name+"-db", "postgres", "CREATE TABLE kv (k text PRIMARY KEY, v text)", "INSERT INTO kv VALUES ('a', '1')")
	podman(t, "exec", name+"-files", "sh", "-c", "echo one > /data/f")

	r := h.must(10*time.Minute, "backup", "--json")
	var res backupResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("decoding backup result: %v\n%s", err, r.stdout)
	}
	if res.Held["files"] == "" {
		t.Fatalf("files was not held for its copy: %+v", res)
	}
	for _, e := range h.events() {
		if e.Service == "files" && (e.Kind == "restarted" || e.Kind == "exited") {
			t.Fatalf("supervision interfered with the backup: %+v", e)
		}
	}

	psql(t, name+"-db", "postgres", "UPDATE kv SET v = '2'")
	podman(t, "exec", name+"-files", "sh", "-c", "echo two > /data/f")
	h.must(10*time.Minute, "restore", "--stop", res.Path)
	if got := psql(t, name+"-db", "postgres", "SELECT v FROM kv WHERE k = 'a'"); got != "1" {
		t.Fatalf("kv after restore = %q", got)
	}
	if got := podman(t, "exec", name+"-files", "cat", "/data/f"); got != "one" {
		t.Fatalf("file after restore = %q", got)
	}
	st := h.status()
	if !st.Daemon || allHealthy(st, 2) != nil {
		t.Fatalf("after restore through the daemon: %+v", st)
	}
	// Supervised again: a killed service comes back.
	podman(t, "kill", name+"-files")
	eventually(t, 2*time.Minute, "files restarted by supervision after the restore", func() error {
		s := h.status()
		for _, svc := range s.Services {
			if svc.Service == "files" && svc.Restarts < 1 {
				return fmt.Errorf("files restarts = %d", svc.Restarts)
			}
		}
		return allHealthy(s, 2)
	})
}
