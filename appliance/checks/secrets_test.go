package checks

import (
	"strings"
	"testing"
)

func TestScanEnv(t *testing.T) {
	tests := []struct {
		kv   string
		want string // substring of What; "" means no finding
	}{
		{"PATH=/usr/local/bin:/usr/bin", ""},
		{"GPG_KEY=7169605F62C751356D054A26A821E680E5FA6305", ""}, // a public fingerprint
		{"PYTHON_SHA256=8fb5f9fbc7609fa822cb31549884575db7fd9657cbffb89510b5d7975963a83a", ""},
		{"PWD=/app", ""},
		{"POSTGRES_PASSWORD_FILE=/run/secrets/db", ""},
		{"DB_PASSWORD=", ""},
		{"DB_PASSWORD=${DB_PASSWORD}", ""},
		{"JWT_SECRET=changeme", ""},
		{"TOKEN_TTL=3600", ""},
		{"API_TOKEN_HEADER=X-Token", ""},
		{"DB_PASSWORD=hunter2", "secret-looking name"},
		{"SESSION_SECRET=q8Zr1xV0pL3mN7sT9wY2bC5dF4gH6jK", "high-entropy"},
		{"AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AWS access key ID"},
		{"SOMETHING=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "GitHub token"},
		{"DATABASE_URL=postgres://tale:s3cret@db:5432/tale", "credentials in a URL"},
		{"DATABASE_URL=postgres://tale:${PW}@db:5432/tale", ""},
		{"DATABASE_URL=postgres://db:5432/tale", ""},
		{"TLS_KEY=-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "private key"},
		{"SLACK=xoxb-123456789012-abcdefghijkl", "Slack token"},
		{"STRIPE=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "Stripe"},
	}
	for _, tt := range tests {
		got := ScanEnv([]string{tt.kv}, nil)
		switch {
		case tt.want == "" && len(got) > 0:
			t.Errorf("%q: unexpected finding %v", tt.kv, got)
		case tt.want != "" && len(got) != 1:
			t.Errorf("%q: want one finding about %q, got %v", tt.kv, tt.want, got)
		case tt.want != "" && !strings.Contains(got[0].What, tt.want):
			t.Errorf("%q: finding %q does not mention %q", tt.kv, got[0].What, tt.want)
		case tt.want != "" && got[0].Severity != SeverityFail:
			t.Errorf("%q: want a FAIL finding", tt.kv)
		}
	}
	if got := ScanEnv([]string{"DB_PASSWORD=hunter2"}, func(n string) bool { return n == "DB_PASSWORD" }); len(got) != 0 {
		t.Errorf("ignored name still reported: %v", got)
	}
}

func TestClassifyPath(t *testing.T) {
	tests := []struct {
		path string
		rule fileRule
	}{
		{"/app/.env", ruleAlways},
		{"/app/.env.production", ruleAlways},
		{"/app/.env.example", ruleNone},
		{"/app/.env.sample", ruleNone},
		{"/root/.ssh/id_rsa", ruleAlways},
		{"/root/.ssh/id_rsa.pub", ruleContent}, // .ssh files are content-checked: a public key passes
		{"/home/u/.aws/credentials", ruleAlways},
		{"/srv/credentials", ruleNone},
		{"/root/.npmrc", ruleContent},
		{"/root/.docker/config.json", ruleContent},
		{"/etc/ssl/private/server.key", ruleContent},
		{"/etc/ssl/certs/ca.pem", ruleContent},
		{"/app/keystore.p12", ruleKeystore},
		{"/usr/bin/env", ruleNone},
		{"/app/environment.py", ruleNone},
	}
	for _, tt := range tests {
		if got, _ := classifyPath(tt.path); got != tt.rule {
			t.Errorf("classifyPath(%q) = %d, want %d", tt.path, got, tt.rule)
		}
	}
}

func TestContentFinding(t *testing.T) {
	tests := []struct {
		path, content string
		found         bool
	}{
		{"/etc/ssl/certs/ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", false},
		{"/etc/ssl/private/server.key", "-----BEGIN PRIVATE KEY-----\nMIIE\n", true},
		{"/app/tls.pem", "-----BEGIN EC PRIVATE KEY-----\n", true},
		{"/root/.ssh/id_rsa.pub", "ssh-rsa AAAAB3Nza user@host\n", false},
		{"/root/.ssh/deploy", "-----BEGIN OPENSSH PRIVATE KEY-----\n", true},
		{"/root/.npmrc", "registry=https://registry.npmjs.org/\n", false},
		{"/root/.npmrc", "//registry.npmjs.org/:_authToken=npm_abcdef0123456789\n", true},
		{"/root/.npmrc", "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n", false},
		{"/root/.netrc", "machine github.com login x password y\n", true},
		{"/root/.pypirc", "[pypi]\nusername = __token__\npassword = pypi-AgEIcHlwaS5vcmc\n", true},
		{"/root/.docker/config.json", `{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"}}}`, true},
		{"/root/.docker/config.json", `{"auths":{},"credsStore":"pass"}`, false},
	}
	for _, tt := range tests {
		_, what := classifyPath(tt.path)
		got := contentFinding(what, []byte(tt.content)) != ""
		if got != tt.found {
			t.Errorf("%s with %q: found = %v, want %v", tt.path, tt.content, got, tt.found)
		}
	}
}

func TestGlobMatcher(t *testing.T) {
	g := newGlobMatcher([]string{"/usr/lib/python3*/test/**", "/etc/ssl/private/*.key", "DB_PASSWORD"})
	for p, want := range map[string]bool{
		"/usr/lib/python3.11/test/keycert.pem":     true,
		"/usr/lib/python3.11/test/sub/dir/x.pem":   true,
		"/usr/lib/python3.11/site-packages/x.pem":  false,
		"/etc/ssl/private/server.key":              true,
		"/etc/ssl/private/nested/server.key":       false,
		"/etc/ssl/private/server.key.bak/whatever": false,
	} {
		if got := g.path(p); got != want {
			t.Errorf("path(%q) = %v, want %v", p, got, want)
		}
	}
	if !g.name("DB_PASSWORD") || g.name("OTHER") {
		t.Error("env name matching is wrong")
	}
}

func TestRootUser(t *testing.T) {
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\ntoor:x:0:0::/:/bin/sh\n")
	tests := []struct {
		user        string
		root, known bool
	}{
		{"", true, true},
		{"root", true, true},
		{"0", true, true},
		{"0:0", true, true},
		{"1000", false, true},
		{"1000:1000", false, true},
		{"app", false, true},
		{"app:app", false, true},
		{"toor", true, true},
		{"ghost", false, false},
	}
	for _, tt := range tests {
		root, known := rootUser(tt.user, passwd)
		if root != tt.root || known != tt.known {
			t.Errorf("rootUser(%q) = %v, %v; want %v, %v", tt.user, root, known, tt.root, tt.known)
		}
	}
}

func TestDropPrivileges(t *testing.T) {
	for s, want := range map[string]bool{
		"exec gosu appuser \"$@\"":             true,
		"exec su-exec app:app node server.js":  true,
		"setpriv --reuid=1000 --regid=1000 sh": true,
		"su postgres -c 'pg_ctl start'":        true,
		"exec node server.js":                  false,
		"echo 'subscribe'":                     false,
	} {
		if got := dropPrivileges.MatchString(s); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}
