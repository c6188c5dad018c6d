package podman

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPruneAardvarkFile(t *testing.T) {
	const live = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	const dead = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	data := []byte("10.89.1.1\n" +
		live + " 10.89.1.2  app-store,store," + live[:12] + "\n" +
		dead + " 10.89.1.3  app-api,api," + dead[:12] + "\n")
	exists := map[string]bool{live: true}

	kept, removed := pruneAardvarkFile(data, exists)
	if len(removed) != 1 || removed[0] != dead[:12] {
		t.Fatalf("removed = %v, want [%s]", removed, dead[:12])
	}
	if got := string(kept); !strings.HasPrefix(got, "10.89.1.1\n"+live) || strings.Contains(got, dead) {
		t.Fatalf("kept = %q, want the gateway line and the live container only", got)
	}

	// Nothing stale: the content is returned unchanged.
	if kept, removed := pruneAardvarkFile(kept, exists); len(removed) != 0 || !strings.Contains(string(kept), live) {
		t.Fatalf("second prune removed %v", removed)
	}

	// Only dead containers: the whole file should go.
	kept, removed = pruneAardvarkFile([]byte("10.89.4.1\n"+dead+" 10.89.4.6  x,store\n"), exists)
	if kept != nil || len(removed) != 1 {
		t.Fatalf("all-dead file: kept %q removed %v, want nil and one", kept, removed)
	}
}

func TestRewriteAardvarkFileLeavesNoStrayFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "aardvark-dns")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "net")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rewriteAardvarkFile(p, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files after a rewrite, want 1", len(entries))
	}
	if b, _ := os.ReadFile(p); string(b) != "new\n" {
		t.Fatalf("content %q", b)
	}
	if err := rewriteAardvarkFile(p, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("file still there after removal: %v", err)
	}
}

func TestNeedsBridgePin(t *testing.T) {
	old := func() string { return "netavark 1.4.0" }
	for _, c := range []struct {
		uri, backend, version string
		helper                func() string
		want                  bool
	}{
		{"unix:///run/user/1000/podman.sock", "netavark", "", old, true},
		{"unix:///run/user/1000/podman.sock", "netavark", "1.9.0", old, false},
		{"unix:///run/user/1000/podman.sock", "netavark", "netavark 1.14.1", nil, false},
		{"unix:///run/user/1000/podman.sock", "netavark", "", func() string { return "" }, true},
		{"unix:///run/user/1000/podman.sock", "cni", "", old, false},
		{"ssh://core@box/run/podman.sock", "netavark", "", old, false},
	} {
		if got := needsBridgePin(c.uri, c.backend, c.version, c.helper); got != c.want {
			t.Errorf("needsBridgePin(%q, %q, %q) = %v, want %v", c.uri, c.backend, c.version, got, c.want)
		}
	}
}
