package compose

import (
	"strings"
	"testing"
	"time"
)

func TestChecksSchema(t *testing.T) {
	dir := writeFiles(t, map[string]string{"compose.yml": `
services:
  api: {image: api, user: "1000"}
  db: {image: db}
x-outpost:
  checks:
    required_labels: [org.opencontainers.image.version]
    size_budgets: {api: 400MB}
    compressed_size_budgets: {api: 150MB, db: "1.2GB"}
    privilege_drop: [db]
    secrets_ignore: ["/usr/lib/python3*/test/**", DB_PASSWORD]
    health_budgets: {db: 90s, api: 30}
    smoke:
      - {name: db-from-api, from: api, target: "db:5432"}
`})
	app, _, err := loadDir(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := app.Checks
	if c.CompressedSizeBudgets["db"] != "1.2GB" || c.PrivilegeDrop[0] != "db" || len(c.SecretsIgnore) != 2 ||
		c.HealthBudgets["db"] != 90*time.Second || c.HealthBudgets["api"] != 30*time.Second {
		t.Errorf("checks: %+v", c)
	}

	dir = writeFiles(t, map[string]string{"compose.yml": `
services:
  api: {image: api}
x-outpost:
  checks:
    compressed_size_budgets: {api: lots, ghost: 1MB}
    privilege_drop: [ghost]
    health_budgets: {api: -5s}
    secrets_ignore: [""]
`})
	_, _, err = loadDir(t, dir, Options{})
	got := ""
	for _, p := range problems(t, err) {
		got += p.Key + ": " + p.Message + "\n"
	}
	for _, want := range []string{
		`compressed_size_budgets.api: "lots" is not a size`,
		`compressed_size_budgets.ghost: service "ghost" does not exist`,
		`privilege_drop.0: service "ghost" does not exist`,
		`health_budgets.api: budget must be positive`,
		`secrets_ignore.0: entry is empty`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing problem %q in:\n%s", want, got)
		}
	}
}
