package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/service"
)

const stageCompose = `name: shop
services:
  api:
    image: localhost/shop:${TAG:-1}
    env_file: api.env
    volumes:
      - ./conf:/etc/shop:ro
`

// stageProject writes a project directory and returns its compose file.
func stageProject(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range map[string]string{
		"compose.yml":    stageCompose,
		".env":           "TAG=2\n",
		"api.env":        "MODE=prod\n",
		"conf/shop.conf": "x = 1\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "compose.yml")
}

func stageLayout(t *testing.T) (service.Layout, service.Account) {
	t.Helper()
	root := t.TempDir()
	lay := service.Layout{Appliance: "shop", UnitName: "outpost-shop", User: "outpost-shop",
		StateDir: filepath.Join(root, "state"), ConfigDir: filepath.Join(root, "etc"), RuntimeDir: "/run/outpost/shop"}
	if err := os.MkdirAll(lay.ConfigDir, 0o750); err != nil {
		t.Fatal(err)
	}
	return lay, service.Account{Name: "outpost-shop", UID: os.Getuid(), GID: os.Getgid(), Home: lay.StateDir}
}

func loadFor(t *testing.T, file string, environ map[string]string) *loaded {
	t.Helper()
	app, _, err := compose.Load(context.Background(), compose.Options{Files: []string{file}, Environ: environ})
	if err != nil {
		t.Fatal(err)
	}
	return &loaded{app: app}
}

func TestStageDefinitionCopiesWhatTheDefinitionReads(t *testing.T) {
	file := stageProject(t)
	lay, acct := stageLayout(t)
	def := defOptions{files: []string{file}}
	st, err := stageDefinition(context.Background(), def, loadFor(t, file, nil), lay, acct, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"compose.yml", ".env", "api.env", "conf/shop.conf"} {
		if _, err := os.Stat(filepath.Join(lay.ConfigDir, f)); err != nil {
			t.Errorf("%s not copied: %v", f, err)
		}
	}
	want := "-f " + filepath.Join(lay.ConfigDir, "compose.yml") + " --name shop"
	if got := strings.Join(st.args, " "); got != want {
		t.Errorf("run args %q, want %q", got, want)
	}
	if !st.changed {
		t.Error("first staging not reported as a change")
	}
	if img := st.app.Services["api"].Image; img != "localhost/shop:2" {
		t.Errorf("copy resolves image %q, want the .env's tag", img)
	}
	if src := st.app.Services["api"].Mounts[0].Source; src != filepath.Join(lay.ConfigDir, "conf") {
		t.Errorf("copy binds %q, want the copied conf", src)
	}

	// Staging the same definition again changes nothing but the bound tree.
	st, err = stageDefinition(context.Background(), def, loadFor(t, file, nil), lay, acct, "")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(st.files, ",") != "compose.yml,.env,api.env,conf" {
		t.Errorf("files %v", st.files)
	}
}

func TestStageDefinitionRefusesShellOnlyVariables(t *testing.T) {
	file := stageProject(t)
	lay, acct := stageLayout(t)
	// TAG from the shell wins over .env for the operator, but the service
	// would not see it.
	_, err := stageDefinition(context.Background(), defOptions{files: []string{file}}, loadFor(t, file, map[string]string{"TAG": "9"}), lay, acct, "")
	if err == nil || !strings.Contains(err.Error(), "services.api.image") || !strings.Contains(err.Error(), "--env-file") {
		t.Fatalf("err = %v; want the differing key and the --env-file fix", err)
	}
}

func TestConfirmPurge(t *testing.T) {
	var errb bytes.Buffer
	s := Streams{In: strings.NewReader("shop\n"), Out: &errb, Err: &errb}
	if err := confirmPurge(s, "shop", ""); err == nil || !strings.Contains(err.Error(), "--yes-delete-data=shop") {
		t.Errorf("non-interactive without the flag: %v", err)
	}
	if err := confirmPurge(s, "shop", "other"); err == nil {
		t.Error("wrong name accepted")
	}
	if err := confirmPurge(s, "shop", "shop"); err != nil {
		t.Errorf("matching flag refused: %v", err)
	}
}
