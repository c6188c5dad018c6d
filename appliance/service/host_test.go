package service

import (
	"os"
	"path/filepath"
	"testing"
)

func TestNextSubIDRange(t *testing.T) {
	for _, tc := range []struct {
		content, name, want string
		has                 bool
	}{
		{"", "outpost-a", "outpost-a:100000:65536", false},
		{"alice:100000:65536\nbob:165536:65536\n", "outpost-a", "outpost-a:231072:65536", false},
		{"alice:300000:1000\nbob:100000:65536\n", "outpost-a", "outpost-a:301000:65536", false},
		{"# comment\nbroken\nalice:100000:65536\n", "alice", "", true},
	} {
		got, has := NextSubIDRange(tc.content, tc.name, SubIDSize)
		if got != tc.want || has != tc.has {
			t.Errorf("NextSubIDRange(%q, %s) = %q, %v; want %q, %v", tc.content, tc.name, got, has, tc.want, tc.has)
		}
	}
}

func TestEnsureAndRemoveSubIDs(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(f, []byte("alice:100000:65536"), 0o644); err != nil {
		t.Fatal(err)
	}
	line, err := EnsureSubIDs(f, "outpost-x", SubIDSize)
	if err != nil || line != "outpost-x:165536:65536" {
		t.Fatalf("EnsureSubIDs = %q, %v", line, err)
	}
	if line, err := EnsureSubIDs(f, "outpost-x", SubIDSize); err != nil || line != "" {
		t.Fatalf("second EnsureSubIDs = %q, %v; want no change", line, err)
	}
	data, _ := os.ReadFile(f)
	if string(data) != "alice:100000:65536\noutpost-x:165536:65536\n" {
		t.Fatalf("file:\n%s", data)
	}
	if err := RemoveSubIDs(f, "outpost-x"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(f)
	if string(data) != "alice:100000:65536\n" {
		t.Fatalf("after remove:\n%s", data)
	}
}

func TestWriteFileOwnedReportsChange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	uid, gid := os.Getuid(), os.Getgid()
	if ch, err := WriteFileOwned(p, []byte("a"), 0o640, uid, gid); err != nil || !ch {
		t.Fatalf("first write: %v %v", ch, err)
	}
	if ch, err := WriteFileOwned(p, []byte("a"), 0o600, uid, gid); err != nil || ch {
		t.Fatalf("same content: %v %v", ch, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v after an unchanged write, want 0600", fi.Mode().Perm())
	}
	if ch, err := WriteFileOwned(p, []byte("b"), 0o600, uid, gid); err != nil || !ch {
		t.Fatalf("new content: %v %v", ch, err)
	}
}

func TestInstallBinary(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "bin", "outpost")
	if err := os.WriteFile(src, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("InstallBinary chowns to root")
	}
	if c, err := InstallBinary(src, dst); err != nil || !c {
		t.Fatalf("first: %v %v", c, err)
	}
	if c, err := InstallBinary(src, dst); err != nil || c {
		t.Fatalf("identical: %v %v", c, err)
	}
	if c, err := InstallBinary(dst, dst); err != nil || c {
		t.Fatalf("itself: %v %v", c, err)
	}
}
