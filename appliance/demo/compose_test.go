package demo

import (
	"io/fs"
	"regexp"
	"slices"
	"testing"

	assets "github.com/outpostdev/outpost/embed"
)

// TestEmbeddedComposeMatchesRoles keeps embed/demo/compose.yml in step
// with this package: every image is DefaultImage and every command names
// a role RunRole knows.
func TestEmbeddedComposeMatchesRoles(t *testing.T) {
	b, err := fs.ReadFile(assets.FS, assets.DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	images := regexp.MustCompile(`(?m)^\s+image:\s*(\S+)\s*$`).FindAllStringSubmatch(string(b), -1)
	if len(images) == 0 {
		t.Fatal("no images in the demo compose file")
	}
	for _, m := range images {
		if m[1] != DefaultImage {
			t.Errorf("image %s, want %s", m[1], DefaultImage)
		}
	}
	commands := regexp.MustCompile(`(?m)^\s+command:\s*\["([a-z-]+)"`).FindAllStringSubmatch(string(b), -1)
	if len(commands) != len(images) {
		t.Errorf("%d commands for %d services", len(commands), len(images))
	}
	for _, m := range commands {
		if !slices.Contains(Roles(), m[1]) {
			t.Errorf("command names unknown role %q", m[1])
		}
	}
}
