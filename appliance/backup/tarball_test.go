package backup

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A volume survives the trip through writeTar and extractTar: contents,
// modes (setgid, sticky), symbolic and hard links, fifos, times, extended
// attributes, and the root's own mode; whatever was in the target before
// is gone.
func TestTarRoundTrip(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(src, 0o750))
	must(os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o640))
	must(os.Mkdir(filepath.Join(src, "dir"), 0o2775))
	must(os.Chmod(filepath.Join(src, "dir"), 0o2775|os.ModeSetgid))
	must(os.WriteFile(filepath.Join(src, "dir", "big"), bytes.Repeat([]byte("0123456789"), 300000), 0o600))
	must(os.Symlink("dir/big", filepath.Join(src, "link")))
	must(os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hard")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o600))
	must(os.Mkdir(filepath.Join(src, "tmp"), 0o777))
	must(os.Chmod(filepath.Join(src, "tmp"), 0o777|os.ModeSticky))
	old := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "a.txt"), old, old))
	must(os.Chtimes(filepath.Join(src, "dir"), old, old))
	xattr := unix.Lsetxattr(filepath.Join(src, "a.txt"), "user.outpost", []byte("kept"), 0) == nil

	var buf bytes.Buffer
	var warnings []string
	warn := func(s string) { warnings = append(warnings, s) }
	must(writeTar(src, &buf, warn))

	if est, err := tarSize(src); err != nil || est < int64(buf.Len())*9/10 || est > int64(buf.Len())*11/10 {
		t.Errorf("tarSize = %d, %v; the tar has %d bytes", est, err, buf.Len())
	}

	dst := t.TempDir()
	must(os.WriteFile(filepath.Join(dst, "stale"), []byte("from before"), 0o600))
	must(extractTar(bytes.NewReader(buf.Bytes()), dst, warn))
	if len(warnings) > 0 {
		t.Errorf("warnings: %v", warnings)
	}

	if _, err := os.Lstat(filepath.Join(dst, "stale")); !os.IsNotExist(err) {
		t.Error("the target's previous content was kept")
	}
	check := func(rel string, mode os.FileMode) os.FileInfo {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
		}
		return fi
	}
	check(".", os.ModeDir|0o750)
	check("a.txt", 0o640)
	check("dir", os.ModeDir|os.ModeSetgid|0o775)
	check("tmp", os.ModeDir|os.ModeSticky|0o777)
	check("fifo", os.ModeNamedPipe|0o600)
	if b, _ := os.ReadFile(filepath.Join(dst, "dir", "big")); len(b) != 3000000 {
		t.Errorf("big: %d bytes", len(b))
	}
	if target, _ := os.Readlink(filepath.Join(dst, "link")); target != "dir/big" {
		t.Errorf("link -> %q", target)
	}
	var a, h unix.Stat_t
	unix.Lstat(filepath.Join(dst, "a.txt"), &a)
	unix.Lstat(filepath.Join(dst, "hard"), &h)
	if a.Ino != h.Ino || a.Nlink != 2 {
		t.Errorf("hard link not kept: inodes %d %d, links %d", a.Ino, h.Ino, a.Nlink)
	}
	for _, rel := range []string{"a.txt", "dir"} {
		fi, _ := os.Lstat(filepath.Join(dst, rel))
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s: mtime %v, want %v", rel, fi.ModTime(), old)
		}
	}
	if a.Uid != uint32(os.Getuid()) {
		t.Errorf("owner %d, want %d", a.Uid, os.Getuid())
	}
	if xattr {
		val := make([]byte, 16)
		n, err := unix.Lgetxattr(filepath.Join(dst, "a.txt"), "user.outpost", val)
		if err != nil || string(val[:n]) != "kept" {
			t.Errorf("xattr = %q, %v", val[:n], err)
		}
	}

	root, err := readRootHeader(bytes.NewReader(buf.Bytes()))
	if err != nil || root.Mode != 0o750 || root.Uid != os.Getuid() {
		t.Errorf("root header = %+v, %v", root, err)
	}
}

// Entries that would land outside the volume are refused.
func TestExtractRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"dotdot", []tar.Header{{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, {Name: "./../evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"absolute", []tar.Header{{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"through symlink", []tar.Header{{Name: "./l", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, {Name: "./l/evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"hard link out", []tar.Header{{Name: "./h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.entries {
				h := h
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			tw.Close()
			outer := t.TempDir()
			dst := filepath.Join(outer, "vol")
			os.Mkdir(dst, 0o755)
			err := extractTar(&buf, dst, func(string) {})
			if err == nil || !strings.Contains(err.Error(), "refusing") {
				t.Fatalf("err = %v", err)
			}
			if _, err := os.Lstat(filepath.Join(outer, "evil")); err == nil {
				t.Error("a file was written outside the volume")
			}
		})
	}
}

func TestResetDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(dir, "d", "e"), 0o700)
	if err := resetDir(dir, os.Getuid(), os.Getgid(), 0o700); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	fi, _ := os.Stat(dir)
	if len(entries) != 0 || fi.Mode().Perm() != 0o700 {
		t.Errorf("after reset: %d entries, mode %v", len(entries), fi.Mode())
	}
}
