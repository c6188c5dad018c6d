package secrets

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
)

func testApp() *model.Appliance {
	return &model.Appliance{
		Name: "shop",
		Services: map[string]*model.Service{
			"db":  {Name: "db", Environment: map[string]string{"A": "1"}, Secrets: []string{"db-password"}},
			"api": {Name: "api", Secrets: []string{"db-password", "api-key"}},
			"web": {Name: "web", Environment: map[string]string{"B": "2"}},
		},
		Secrets: []*model.Secret{
			{Name: "db-password", Generate: "password", Length: 24},
			{Name: "api-key", Generate: "hex", Length: 32, Env: "API_KEY"},
		},
	}
}

func TestEnsureGeneratesOnceAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets", "shop")
	app := testApp()
	res, err := Ensure(dir, app, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.Generated, ","); got != "db-password,api-key" {
		t.Fatalf("generated %q", got)
	}
	first, err := Load(dir, app)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(first["api-key"]) {
		t.Errorf("api-key %q is not 32 bytes of hex", first["api-key"])
	}
	if len(first["db-password"]) != 24 || strings.ContainsAny(first["db-password"], "$'\"` \\") {
		t.Errorf("db-password %q: want 24 safe characters", first["db-password"])
	}
	for _, p := range []string{dir, filepath.Dir(dir)} {
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", p, fi.Mode().Perm())
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, "api-key"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", fi.Mode().Perm())
	}

	// A second run (reinstall, upgrade) keeps every value.
	res, err = Ensure(dir, app, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Generated) != 0 || len(res.Kept) != 2 {
		t.Fatalf("second Ensure: %+v", res)
	}
	again, _ := Load(dir, app)
	if again["api-key"] != first["api-key"] || again["db-password"] != first["db-password"] {
		t.Fatal("values changed on the second Ensure")
	}

	// A secret added later is generated without touching the others.
	app.Secrets = append(app.Secrets, &model.Secret{Name: "new", Generate: "base64", Length: 12})
	res, err = Ensure(dir, app, nil)
	if err != nil || strings.Join(res.Generated, ",") != "new" {
		t.Fatalf("third Ensure: %+v %v", res, err)
	}
}

func TestInject(t *testing.T) {
	app := testApp()
	out, err := Inject(app, map[string]string{"db-password": "pw", "api-key": "k"})
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Services["db"].Environment; got["DB_PASSWORD"] != "pw" || got["A"] != "1" {
		t.Errorf("db env %v", got)
	}
	if got := out.Services["api"].Environment; got["DB_PASSWORD"] != "pw" || got["API_KEY"] != "k" {
		t.Errorf("api env %v", got)
	}
	if _, ok := out.Services["web"].Environment["DB_PASSWORD"]; ok {
		t.Error("web got a secret it does not list")
	}
	if _, ok := app.Services["db"].Environment["DB_PASSWORD"]; ok || app.Services["api"].Environment != nil {
		t.Error("Inject modified its input")
	}
	if _, err := Inject(app, map[string]string{"db-password": "pw"}); err == nil {
		t.Error("missing value: want an error")
	}
}

func TestLoadMissingSaysWhatToDo(t *testing.T) {
	_, err := Load(t.TempDir(), testApp())
	if err == nil || !strings.Contains(err.Error(), "outpost install") {
		t.Fatalf("err = %v", err)
	}
}

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		s    model.Secret
		want *regexp.Regexp
	}{
		{model.Secret{Generate: "hex", Length: 4}, regexp.MustCompile(`^[0-9a-f]{8}$`)},
		{model.Secret{Generate: "base64", Length: 3}, regexp.MustCompile(`^[A-Za-z0-9+/]{4}$`)},
		{model.Secret{Generate: "password", Length: 10}, regexp.MustCompile(`^[a-zA-Z2-9]{10}$`)},
		{model.Secret{Generate: "", Length: 0}, regexp.MustCompile(`^[0-9a-f]{64}$`)},
	} {
		got, err := Generate(&tc.s, rand.Reader)
		if err != nil || !tc.want.MatchString(got) {
			t.Errorf("%+v: %q %v", tc.s, got, err)
		}
	}
	if _, err := Generate(&model.Secret{Generate: "hex", Length: 8}, bytes.NewReader(nil)); err == nil {
		t.Error("short random source: want an error")
	}
	if EnvName(&model.Secret{Name: "db-password"}) != "DB_PASSWORD" {
		t.Error("EnvName default")
	}
}

func TestRedactKeepsOnlyMarkers(t *testing.T) {
	app := testApp()
	values := map[string]string{}
	for _, s := range app.Secrets {
		values[s.Name] = "value-of-" + s.Name
	}
	withValues, err := Inject(app, values)
	if err != nil {
		t.Fatal(err)
	}
	red := Redact(withValues)
	b, err := json.Marshal(red)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "value-of-") {
		t.Fatalf("redacted definition holds a value: %s", b)
	}
	for _, s := range app.Secrets {
		if !strings.Contains(string(b), Marker(s.Name)) {
			t.Errorf("redacted definition lacks the marker of %s", s.Name)
		}
	}
	back, err := Inject(red, values)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, withValues) {
		t.Fatal("Inject after Redact does not give the definition back")
	}
	if withValues.Services["api"] == red.Services["api"] {
		t.Fatal("Redact modified its argument's services")
	}
}
