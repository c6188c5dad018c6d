package checks

import (
	"bytes"
	"fmt"
	"math"
	"path"
	"regexp"
	"strings"
)

// Severity of a secret finding: a FAIL, or a WARN for weaker evidence
// (a private key in a test directory, a keystore whose content is opaque).
type Severity int

// Finding severities.
const (
	SeverityWarn Severity = iota
	SeverityFail
)

// Finding is one secret-looking thing baked into an image.
type Finding struct {
	// Where is "env NAME" or the file path inside the image.
	Where string `json:"where"`
	// What says what was matched, e.g. "AWS access key ID" or ".env file".
	What string `json:"what"`
	// Layer is the 0-based layer index holding a file; -1 for env.
	Layer int `json:"layer"`
	// Note adds context, e.g. that a later layer deleted the file.
	Note     string   `json:"note,omitempty"`
	Severity Severity `json:"-"`
}

// String renders the finding for reports: where, what, layer, note.
func (f Finding) String() string {
	s := f.Where + ": " + f.What
	if f.Layer >= 0 {
		s += fmt.Sprintf(" (layer %d)", f.Layer)
	}
	if f.Note != "" {
		s += "; " + f.Note
	}
	return s
}

// knownFormats are value formats that are secrets whatever they are called.
var knownFormats = []struct {
	what string
	re   *regexp.Regexp
}{
	{"private key (PEM)", regexp.MustCompile(`-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----`)},
	{"AWS access key ID", regexp.MustCompile(`\b(AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b`)},
	{"GitHub token", regexp.MustCompile(`\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b`)},
	{"GitLab token", regexp.MustCompile(`\bglpat-[A-Za-z0-9_\-]{20,}\b`)},
	{"Slack token", regexp.MustCompile(`\bxox[baprs]-[A-Za-z0-9-]{10,}\b`)},
	{"Stripe secret key", regexp.MustCompile(`\b[sr]k_live_[A-Za-z0-9]{20,}\b`)},
	{"Google API key", regexp.MustCompile(`\bAIza[0-9A-Za-z_\-]{35}\b`)},
	{"OpenAI API key", regexp.MustCompile(`\bsk-(proj-)?[A-Za-z0-9_\-]{32,}\b`)},
	{"credentials in a URL", regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:[^/\s@$]+@`)},
}

// secretName matches environment variable names that usually hold secrets.
// Plain KEY is not enough (GPG_KEY holds a public fingerprint in many
// official images).
var secretName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH_?KEY|CREDENTIAL|SIGNING_?KEY|ENCRYPTION_?KEY|MASTER_?KEY)`)

// notSecretName are names that match secretName but point at a secret
// rather than hold it, or configure one (POSTGRES_PASSWORD_FILE, TOKEN_TTL).
var notSecretName = regexp.MustCompile(`(?i)(_FILE|_PATH|_DIR|_URL|_URI|_HOST|_PORT|_TTL|_TIMEOUT|_LENGTH|_LEN|_EXPIRY|_EXPIRES|_ALGORITHM|_ALG|_TYPE|_HEADER|_NAME|_ENABLED|_ENV|_VAR|_ID)$`)

// placeholder matches values that do not hold a secret: references,
// empty-ish markers, booleans and numbers.
var placeholder = regexp.MustCompile(`(?i)^(|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|<[^>]*>|\*+|x+|true|false|yes|no|none|null|nil|changeme|change-me|change_me|example|placeholder|redacted|dummy|[0-9]+)$`)

// ScanEnv reports secrets in an image's environment ("NAME=value" entries):
// values in a known secret format whatever the name, and non-placeholder
// values of secret-looking names. ignore says whether a name is exempt.
func ScanEnv(env []string, ignore func(name string) bool) []Finding {
	var out []Finding
	for _, kv := range env {
		name, val, _ := strings.Cut(kv, "=")
		if ignore != nil && ignore(name) {
			continue
		}
		where := "env " + name
		if what := knownFormat(val); what != "" {
			out = append(out, Finding{Where: where, What: what + " in the value", Layer: -1, Severity: SeverityFail})
			continue
		}
		if !secretName.MatchString(name) || notSecretName.MatchString(name) {
			continue
		}
		v := strings.TrimSpace(val)
		if placeholder.MatchString(v) || strings.HasPrefix(v, "/") {
			continue
		}
		what := "secret-looking name with a value baked in"
		if len(v) >= 16 && entropy(v) >= 3.5 {
			what = fmt.Sprintf("secret-looking name with a high-entropy value (%d characters)", len(v))
		}
		out = append(out, Finding{Where: where, What: what, Layer: -1, Severity: SeverityFail})
	}
	return out
}

// knownFormat returns what known secret format s contains, "" for none.
func knownFormat(s string) string {
	for _, f := range knownFormats {
		if f.re.MatchString(s) {
			return f.what
		}
	}
	return ""
}

// entropy is the Shannon entropy of s in bits per character.
func entropy(s string) float64 {
	counts := map[rune]int{}
	n := 0
	for _, r := range s {
		counts[r]++
		n++
	}
	var h float64
	for _, c := range counts {
		p := float64(c) / float64(n)
		h -= p * math.Log2(p)
	}
	return h
}

// fileRule decides about one file in a layer from its path (and, when
// needContent, from its first bytes).
type fileRule int

const (
	ruleNone fileRule = iota
	// ruleAlways: the name alone is a finding (.env, id_rsa, credentials).
	ruleAlways
	// ruleContent: a finding only when the content matches (keys, .npmrc).
	ruleContent
	// ruleKeystore: opaque key stores (.p12, .jks): a warning.
	ruleKeystore
)

// maxContentScan bounds how much of a candidate file is read.
const maxContentScan = 256 << 10

// classifyPath says how a file at p (absolute, cleaned) is screened.
func classifyPath(p string) (fileRule, string) {
	base := path.Base(p)
	lower := strings.ToLower(base)
	dir := path.Dir(p)
	switch {
	case lower == ".env" || (strings.HasPrefix(lower, ".env.") && !isExampleSuffix(strings.TrimPrefix(lower, ".env."))):
		return ruleAlways, ".env file"
	case lower == "id_rsa" || lower == "id_dsa" || lower == "id_ecdsa" || lower == "id_ed25519" || lower == "id_ecdsa_sk" || lower == "id_ed25519_sk":
		return ruleAlways, "SSH private key file"
	case base == "credentials" && path.Base(dir) == ".aws":
		return ruleAlways, "AWS credentials file"
	case lower == ".git-credentials":
		return ruleAlways, "git credentials file"
	case lower == ".npmrc" || lower == ".yarnrc" || lower == ".yarnrc.yml":
		return ruleContent, "npm/yarn registry token"
	case lower == ".pypirc" || lower == ".netrc" || lower == "_netrc":
		return ruleContent, "password in " + base
	case base == "config.json" && path.Base(dir) == ".docker":
		return ruleContent, "registry credentials in .docker/config.json"
	case strings.HasSuffix(lower, ".pem") || strings.HasSuffix(lower, ".key") || strings.HasSuffix(lower, ".p8") || path.Base(dir) == ".ssh" || path.Base(dir) == "private":
		return ruleContent, "private key"
	case strings.HasSuffix(lower, ".p12") || strings.HasSuffix(lower, ".pfx") || strings.HasSuffix(lower, ".jks") || strings.HasSuffix(lower, ".keystore"):
		return ruleKeystore, "key store"
	}
	return ruleNone, ""
}

func isExampleSuffix(s string) bool {
	switch s {
	case "example", "sample", "template", "dist", "defaults", "default", "schema", "tmpl", "tpl":
		return true
	}
	return false
}

var (
	privateKeyHeader = knownFormats[0].re
	npmToken         = regexp.MustCompile(`(?m)(_authToken|_auth|_password|npmAuthToken|npmAuthIdent)\s*[=:]\s*["']?[^\s"'$]`)
	netrcPassword    = regexp.MustCompile(`(?m)^\s*(password\s*[=:]|.*\bpassword\s+\S)`)
	dockerAuth       = regexp.MustCompile(`"(auth|identitytoken|registrytoken)"\s*:\s*"[^"]+`)
)

// contentFinding returns what a candidate file's content reveals, "" for
// nothing.
func contentFinding(what string, content []byte) string {
	switch {
	case strings.HasPrefix(what, "npm"):
		if npmToken.Match(content) {
			return what
		}
	case strings.HasPrefix(what, "password in"):
		if netrcPassword.Match(content) {
			return what
		}
	case strings.HasPrefix(what, "registry credentials"):
		if dockerAuth.Match(content) {
			return what
		}
	case what == "private key":
		if privateKeyHeader.Match(content) {
			return "private key (PEM)"
		}
	}
	return ""
}

// inTestTree reports whether p lies in a directory of tests, examples or
// documentation, where libraries ship sample keys: findings there warn.
func inTestTree(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		switch strings.ToLower(seg) {
		case "test", "tests", "testdata", "testing", "__tests__", "fixtures", "test_data", "examples", "example", "doc", "docs":
			return true
		}
	}
	return false
}

// looksText reports whether b looks like text (no NUL in the first KiB).
func looksText(b []byte) bool {
	return !bytes.Contains(b[:min(len(b), 1024)], []byte{0})
}

// globMatcher matches secrets_ignore entries: absolute path globs where
// `**` crosses directories, or environment variable names.
type globMatcher struct {
	paths []*regexp.Regexp
	names map[string]bool
}

func newGlobMatcher(entries []string) *globMatcher {
	g := &globMatcher{names: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if !strings.HasPrefix(e, "/") {
			g.names[e] = true
			continue
		}
		var b strings.Builder
		b.WriteString("^")
		for i := 0; i < len(e); i++ {
			switch c := e[i]; c {
			case '*':
				if i+1 < len(e) && e[i+1] == '*' {
					b.WriteString(".*")
					i++
				} else {
					b.WriteString("[^/]*")
				}
			case '?':
				b.WriteString("[^/]")
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		b.WriteString("$")
		g.paths = append(g.paths, regexp.MustCompile(b.String()))
	}
	return g
}

func (g *globMatcher) path(p string) bool {
	for _, re := range g.paths {
		if re.MatchString(p) {
			return true
		}
	}
	return false
}

func (g *globMatcher) name(n string) bool { return g.names[n] }
