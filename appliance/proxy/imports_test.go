package proxy

import (
	"os/exec"
	"strings"
	"testing"
)

// Caddy has exactly one importer in Outpost: this package.
func TestOnlyProxyImportsCaddy(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go is not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-e", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "github.com/outpostdev/outpost/...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	const self = "github.com/outpostdev/outpost/appliance/proxy"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] == self || strings.HasPrefix(fields[0], "github.com/outpostdev/outpost/internal_warm") {
			continue
		}
		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, "github.com/caddyserver/") {
				t.Errorf("%s imports %s: only %s may import Caddy", fields[0], imp, self)
			}
		}
	}
}
