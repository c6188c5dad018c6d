package volumes

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tempDir is t.TempDir whose read-only directories (makeTree writes one)
// are made writable again before it is removed, so the tests also pass
// when not run as root.
func tempDir(t *testing.T) string {
	dir := t.TempDir()
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(path, 0o755)
			}
			return nil
		})
	})
	return dir
}

// makeTree writes a source tree with the kinds of entries a volume holds.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "pg/base/1"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "pg/base/1/1259"), []byte(strings.Repeat("page", 4096)), 0o600))
	must(os.WriteFile(filepath.Join(dir, "pg/PG_VERSION"), []byte("15\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o640))
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Mkdir(filepath.Join(dir, "shared"), 0o755))
	must(syscall.Chmod(filepath.Join(dir, "shared"), 0o2775))
	must(syscall.Chmod(filepath.Join(dir, "run.sh"), 0o4755)) // setuid must survive the chown
	must(os.Symlink("pg/PG_VERSION", filepath.Join(dir, "version-link")))
	must(os.Symlink("/nowhere/dangling", filepath.Join(dir, "dangling")))
	must(os.Link(filepath.Join(dir, "pg/PG_VERSION"), filepath.Join(dir, "hardlink")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(os.Mkdir(filepath.Join(dir, "readonly"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "readonly/f"), []byte("x"), 0o444))
	must(os.Chmod(filepath.Join(dir, "readonly"), 0o555))
	old := time.Date(2020, 1, 2, 3, 4, 5, 600, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "pg/PG_VERSION"), old, old))
	must(os.Chtimes(filepath.Join(dir, "pg"), old, old))
	if os.Geteuid() == 0 {
		// As root (CI), ownership must be carried over too.
		must(os.Lchown(filepath.Join(dir, "pg"), 1000, 1000))
		must(os.Lchown(filepath.Join(dir, "pg/PG_VERSION"), 1000, 1001))
		must(os.Lchown(filepath.Join(dir, "version-link"), 1000, 1000))
		must(os.Lchown(filepath.Join(dir, "run.sh"), 1000, 1000))
		must(syscall.Chmod(filepath.Join(dir, "run.sh"), 0o4755)) // the chown cleared it
	} else {
		t.Log("not root: owners are the same on both sides, so ownership is only checked by the e2e tests")
	}
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	st, err := lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCopyTreePreservesAndVerifies(t *testing.T) {
	src, dst := tempDir(t), tempDir(t)
	makeTree(t, src)
	before, err := TreeChecksum(src)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := CopyTree(CopyOptions{From: src, To: dst, FromName: "app_old", ToName: "app_new"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Status != StatusCopied {
		t.Fatalf("status %q, want copied", rep.Status)
	}
	after, err := TreeChecksum(dst)
	if err != nil {
		t.Fatal(err)
	}
	if after != before || rep.Marker.Checksum != before.Checksum || rep.Marker.Files != before.Files {
		t.Fatalf("source %+v, destination %+v, marker %+v", before, after, rep.Marker)
	}
	// 14 entries: pg, pg/base, pg/base/1, 1259, PG_VERSION, empty, run.sh,
	// shared, version-link, dangling, hardlink, fifo, readonly, readonly/f.
	if before.Files != 14 || before.Bytes != int64(4*4096+3+10+3+1) {
		t.Fatalf("counted %d entries, %d bytes", before.Files, before.Bytes)
	}
	// The source is unchanged.
	if again, _ := TreeChecksum(src); again != before {
		t.Fatalf("source changed: %+v -> %+v", before, again)
	}
	for _, rel := range []string{"pg", "pg/PG_VERSION", "run.sh", "shared", "version-link", "readonly", "readonly/f", "fifo", "."} {
		s, d := statOf(t, filepath.Join(src, rel)), statOf(t, filepath.Join(dst, rel))
		if s.Mode != d.Mode || s.Uid != d.Uid || s.Gid != d.Gid {
			t.Errorf("%s: source mode %o %d:%d, copy %o %d:%d", rel, s.Mode, s.Uid, s.Gid, d.Mode, d.Uid, d.Gid)
		}
		if rel != "." && s.Mtim != d.Mtim {
			t.Errorf("%s: mtime %v, copy %v", rel, s.Mtim, d.Mtim)
		}
	}
	if target, err := os.Readlink(filepath.Join(dst, "version-link")); err != nil || target != "pg/PG_VERSION" {
		t.Errorf("symlink: %q %v", target, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "dangling")); err != nil || target != "/nowhere/dangling" {
		t.Errorf("dangling symlink: %q %v", target, err)
	}
	if a, b := statOf(t, filepath.Join(dst, "hardlink")), statOf(t, filepath.Join(dst, "pg/PG_VERSION")); a.Ino != b.Ino {
		t.Errorf("hard link not kept: inodes %d and %d", a.Ino, b.Ino)
	}
	// The marker says what was verified; a second run changes nothing.
	data, err := os.ReadFile(filepath.Join(dst, MarkerPrefix+"app_old"))
	if err != nil {
		t.Fatal(err)
	}
	var m Marker
	if err := json.Unmarshal(data, &m); err != nil || m.Checksum != before.Checksum || m.From != "app_old" || m.To != "app_new" {
		t.Fatalf("marker %s: %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(dst, PartialPrefix+"app_old")); !os.IsNotExist(err) {
		t.Errorf("in-progress marker left behind: %v", err)
	}
	rep2, err := CopyTree(CopyOptions{From: src, To: dst, FromName: "app_old", ToName: "app_new"})
	if err != nil || rep2.Status != StatusSkipped || rep2.Marker != m {
		t.Fatalf("second run: %+v %v", rep2, err)
	}
}

func TestCopyTreeRefusesPopulatedDestination(t *testing.T) {
	src, dst := tempDir(t), tempDir(t)
	makeTree(t, src)
	if err := os.WriteFile(filepath.Join(dst, "precious"), []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := CopyTree(CopyOptions{From: src, To: dst, FromName: "a_old", ToName: "a_new"})
	if err != nil || rep.Status != StatusPopulated || len(rep.Entries) != 1 || rep.Entries[0] != "precious" {
		t.Fatalf("got %+v %v, want populated naming precious", rep, err)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "precious")); string(data) != "data" {
		t.Fatal("destination was changed")
	}
	// A marker of another migration is someone else's data too.
	dst2 := tempDir(t)
	if err := os.WriteFile(filepath.Join(dst2, MarkerPrefix+"a_other"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rep, err := CopyTree(CopyOptions{From: src, To: dst2, FromName: "a_old", ToName: "a_new"}); err != nil || rep.Status != StatusPopulated {
		t.Fatalf("got %+v %v, want populated", rep, err)
	}
}

func TestCopyTreeRedoesInterruptedCopy(t *testing.T) {
	src, dst := tempDir(t), tempDir(t)
	makeTree(t, src)
	// What a copy killed halfway leaves: the in-progress marker and part
	// of the tree.
	if err := os.WriteFile(filepath.Join(dst, PartialPrefix+"a_old"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dst, "pg/base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "pg/half"), []byte("trunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := CopyTree(CopyOptions{From: src, To: dst, FromName: "a_old", ToName: "a_new"})
	if err != nil || rep.Status != StatusCopied {
		t.Fatalf("got %+v %v", rep, err)
	}
	want, _ := TreeChecksum(src)
	if got, _ := TreeChecksum(dst); got != want {
		t.Fatalf("destination %+v, want %+v", got, want)
	}
}

func TestTreeChecksumSeesChanges(t *testing.T) {
	dir := tempDir(t)
	makeTree(t, dir)
	base, err := TreeChecksum(dir)
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]func() error{
		"content": func() error { return os.WriteFile(filepath.Join(dir, "empty"), []byte("!"), 0o640) },
		"mode":    func() error { return os.Chmod(filepath.Join(dir, "pg/PG_VERSION"), 0o600) },
		"link": func() error {
			os.Remove(filepath.Join(dir, "version-link"))
			return os.Symlink("elsewhere", filepath.Join(dir, "version-link"))
		},
		"new file": func() error { return os.WriteFile(filepath.Join(dir, "zzz"), nil, 0o644) },
	}
	for name, change := range changes {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		got, err := TreeChecksum(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got.Checksum == base.Checksum {
			t.Errorf("%s: checksum unchanged", name)
		}
		base = got
	}
	// Markers in the root are not data.
	if err := os.WriteFile(filepath.Join(dir, MarkerPrefix+"x"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := TreeChecksum(dir); got != base {
		t.Errorf("a marker changed the checksum")
	}
}

// After a rolled-back upgrade the old revision writes the source again: a
// copy nobody used since is refreshed; one both sides wrote is refused.
func TestCopyTreeRechecksTheSource(t *testing.T) {
	src, dst := tempDir(t), tempDir(t)
	makeTree(t, src)
	o := CopyOptions{From: src, To: dst, FromName: "a_old", ToName: "a_new"}
	first, err := CopyTree(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "written-after"), []byte("new row"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := CopyTree(o)
	if err != nil || rep.Status != StatusCopied || len(rep.Warnings) != 1 || rep.Marker.Checksum == first.Marker.Checksum {
		t.Fatalf("stale copy: %+v %v", rep, err)
	}
	want, _ := TreeChecksum(src)
	if got, _ := TreeChecksum(dst); got != want || rep.Marker.Checksum != want.Checksum {
		t.Fatalf("refreshed copy %+v, source %+v", got, want)
	}
	// Both written since: nothing is touched.
	if err := os.WriteFile(filepath.Join(src, "written-after"), []byte("newer row"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "new-service-data"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := TreeChecksum(dst)
	rep, err = CopyTree(o)
	if err != nil || rep.Status != StatusDiverged {
		t.Fatalf("diverged: %+v %v", rep, err)
	}
	if after, _ := TreeChecksum(dst); after != before {
		t.Fatal("a diverged destination was changed")
	}
	if _, err := os.Stat(filepath.Join(dst, MarkerPrefix+"a_old")); err != nil {
		t.Fatalf("completion marker: %v", err)
	}
}
