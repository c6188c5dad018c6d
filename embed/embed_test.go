package assets

import (
	"io/fs"
	"strings"
	"testing"
)

func TestDemoAssets(t *testing.T) {
	compose, err := fs.ReadFile(FS, DemoCompose)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"name: outpost-demo",
		"x-outpost:",
		"image: localhost/outpost-demo:latest",
		"store-data:/data",
		"/tmp/store-ready",
		"condition: service_healthy",
	} {
		if !strings.Contains(string(compose), want) {
			t.Errorf("%s lacks %q", DemoCompose, want)
		}
	}
	if strings.Contains(string(compose), "\t") {
		t.Errorf("%s contains a tab; YAML forbids tabs for indentation", DemoCompose)
	}
	if _, err := fs.Stat(FS, "demo/README.md"); err != nil {
		t.Error(err)
	}
}
