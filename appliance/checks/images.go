package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"regexp"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// ImageEngine is what Images and Vuln need from the container engine.
type ImageEngine interface {
	ImageInspect(ctx context.Context, ref string) (engine.ImageInfo, error)
	SaveImage(ctx context.Context, ref string, w io.Writer) error
}

var _ ImageEngine = engine.Engine(nil)

// DefaultRequiredLabels are required when x-outpost.checks.required_labels
// is not set.
var DefaultRequiredLabels = []string{"org.opencontainers.image.version", "org.opencontainers.image.source"}

// recommendedLabels are reported (as notes) when missing.
var recommendedLabels = []string{
	"org.opencontainers.image.title", "org.opencontainers.image.created",
	"org.opencontainers.image.revision", "org.opencontainers.image.licenses",
}

// Image check names.
const (
	CheckPresent     = "present"
	CheckLabels      = "labels"
	CheckNonRoot     = "non-root"
	CheckSecrets     = "secrets"
	CheckHealthcheck = "healthcheck"
	CheckSize        = "size"
)

// ImagesOptions configure Images.
type ImagesOptions struct {
	// Appliance is the loaded definition whose images are checked, with
	// its x-outpost.checks settings. Required.
	Appliance *model.Appliance
	// Engine reads images from Podman storage. It may be nil when Archives
	// provides every image.
	Engine ImageEngine
	// Archives are docker-archive files (`podman save` output) to read
	// instead of Podman storage; each provides the images its manifest
	// names.
	Archives []string
	// Bundle is an Outpost bundle (`outpost bundle build`) whose images
	// are read instead of Podman storage, in one pass. Its signature is
	// not checked: nothing read is acted on.
	Bundle string
	// Services restricts the check to these services' images; empty
	// checks all.
	Services []string
	// TempDir is where an image is unpacked while it is read (it needs
	// about the image's size). Default os.TempDir().
	TempDir string
	// Workers bounds how many layers are read in parallel. Default
	// GOMAXPROCS.
	Workers int
	// Progress receives one line per image read; nil discards.
	Progress func(subject, message string)
	// Log receives debug logs; nil discards.
	Log *slog.Logger
}

// imageUse is one image and the services that run it.
type imageUse struct {
	ref      string
	services []*model.Service
}

// Images checks every image the appliance uses and returns the report.
// An image that cannot be found or read is a FAIL, not an error; errors
// are for what stops the whole check (a missing definition, a cancelled
// context).
func Images(ctx context.Context, opts ImagesOptions) (*Report, error) {
	app := opts.Appliance
	if app == nil {
		return nil, errors.New("checking images: no appliance definition given")
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = func(string, string) {}
	}
	if opts.Workers <= 0 {
		opts.Workers = goruntime.GOMAXPROCS(0)
	}
	rep := &Report{Kind: KindImages, Appliance: app.Name, Started: time.Now()}
	uses, err := imageUses(app, opts.Services)
	if err != nil {
		return nil, err
	}
	archives, err := indexArchives(opts.Archives)
	if err != nil {
		return nil, err
	}
	cache := newLayerCache()
	done := map[string][]Result{}
	if opts.Bundle != "" {
		err := readBundleImages(ctx, opts.Bundle, uses, func(u imageUse, r io.Reader) {
			opts.Progress(u.ref, "reading image from the bundle")
			done[u.ref] = checkImage(ctx, app, u, func(dir string) (*imageArchive, error) {
				a, err := unpackArchive(r, dir)
				if err != nil {
					return nil, fmt.Errorf("reading %s from bundle %s: %w", u.ref, opts.Bundle, err)
				}
				return a, nil
			}, opts, cache)
		})
		if err != nil {
			return nil, err
		}
	}
	for _, u := range uses {
		if _, ok := done[u.ref]; !ok && opts.Engine == nil && archives[normalizeRef(u.ref)] == "" {
			return nil, fmt.Errorf("checking images: %s is not in any --archive or --bundle and no container engine is connected", u.ref)
		}
	}
	for _, u := range uses {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, ok := done[u.ref]
		if !ok {
			opts.Progress(u.ref, "reading image")
			res = checkImage(ctx, app, u, imageFrom(ctx, u.ref, archives[normalizeRef(u.ref)], opts.Engine), opts, cache)
		}
		for _, r := range res {
			rep.add(r)
		}
	}
	rep.finish()
	return rep, nil
}

// imageUses groups the selected services by image reference.
func imageUses(app *model.Appliance, only []string) ([]imageUse, error) {
	selected := map[string]bool{}
	for _, s := range only {
		if _, ok := app.Services[s]; !ok {
			return nil, fmt.Errorf("appliance %s has no service %q (services: %s)", app.Name, s, strings.Join(app.ServiceNames(), ", "))
		}
		selected[s] = true
	}
	byRef := map[string]*imageUse{}
	var refs []string
	for _, n := range app.ServiceNames() {
		if len(selected) > 0 && !selected[n] {
			continue
		}
		svc := app.Services[n]
		u, ok := byRef[svc.Image]
		if !ok {
			u = &imageUse{ref: svc.Image}
			byRef[svc.Image] = u
			refs = append(refs, svc.Image)
		}
		u.services = append(u.services, svc)
	}
	sort.Strings(refs)
	out := make([]imageUse, 0, len(refs))
	for _, r := range refs {
		out = append(out, *byRef[r])
	}
	return out, nil
}

// normalizeRef turns a reference into its canonical form
// ("postgres:16" → "index.docker.io/library/postgres:16") so Compose
// references match archive tags.
func normalizeRef(ref string) string {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return ref
	}
	return r.Name()
}

// indexArchives maps each image reference an archive's manifest names to
// the archive file.
func indexArchives(paths []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range paths {
		tags, err := archiveTags(p)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			out[normalizeRef(t)] = p
		}
	}
	return out, nil
}

// archiveTags reads the RepoTags of a docker-archive file.
func archiveTags(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("opening image archive: %w", err)
	}
	defer f.Close()
	tags, err := manifestTags(f)
	if err != nil {
		return nil, fmt.Errorf("reading image archive %s: %w", p, err)
	}
	if len(tags) == 0 {
		return nil, fmt.Errorf("image archive %s names no image (RepoTags is empty); save it with a tag: podman save -o FILE IMAGE:TAG", p)
	}
	return tags, nil
}

func sizeOf(b int64) string { return units.HumanSizeWithPrecision(float64(b), 4) }

// imageOpener unpacks an image into dir.
type imageOpener func(dir string) (*imageArchive, error)

// checkImage runs every image check on one image.
func checkImage(ctx context.Context, app *model.Appliance, u imageUse, open imageOpener, opts ImagesOptions, cache *layerCache) []Result {
	svcNames := make([]string, len(u.services))
	for i, s := range u.services {
		svcNames[i] = s.Name
	}
	result := func(check string, st Status, detail string, notes ...string) Result {
		return Result{Subject: u.ref, Services: svcNames, Check: check, Status: st, Detail: detail, Notes: notes}
	}
	start := time.Now()
	dir, err := os.MkdirTemp(opts.TempDir, "outpost-check-")
	if err != nil {
		res := result(CheckPresent, Fail, fmt.Sprintf("creating a temporary directory for %s: %v (set --tmp-dir)", u.ref, err))
		return []Result{res}
	}
	defer os.RemoveAll(dir)
	a, err := open(dir)
	if err != nil {
		res := result(CheckPresent, Fail, err.Error())
		res.Duration = time.Since(start)
		return []Result{res}
	}
	readTime := time.Since(start)
	checks := app.Checks
	if checks == nil {
		checks = &model.Checks{}
	}
	cfg := a.config.Config
	ignore := newGlobMatcher(checks.SecretsIgnore)

	// Files the non-root check may need: /etc/passwd and entrypoint scripts.
	want := map[string]bool{"/etc/passwd": true}
	for _, s := range u.services {
		for _, p := range scriptCandidates(entrypointOf(cfg, s), cfg.Env, cfg.WorkingDir) {
			want[p] = true
		}
	}
	scanStart := time.Now()
	scan, err := scanLayers(ctx, a.sources(), want, ignore, opts.Workers, cache)
	if err != nil {
		res := result(CheckPresent, Fail, fmt.Sprintf("reading the layers of %s: %v", u.ref, err))
		res.Duration = time.Since(start)
		return []Result{res}
	}
	scanTime := time.Since(scanStart)
	opts.Log.Debug("image read", "image", u.ref, "layers", len(a.layers), "read", readTime, "scan", scanTime)

	var out []Result
	out = append(out, labelsCheck(result, cfg.Labels, checks.RequiredLabels))
	out = append(out, nonRootCheck(result, cfg, u.services, scan.Files, checks.PrivilegeDrop))
	sec := secretsCheck(result, cfg.Env, scan, ignore, len(a.layers))
	sec.Duration = readTime + scanTime
	out = append(out, sec)
	out = append(out, healthcheckCheck(result, cfg.Healthcheck, u.services))
	out = append(out, sizeCheck(result, scan, u.services, checks))
	return out
}

// imageFrom returns the opener reading ref from its archive file, else
// from Podman storage.
func imageFrom(ctx context.Context, ref, archivePath string, eng ImageEngine) imageOpener {
	return func(dir string) (*imageArchive, error) {
		if archivePath != "" {
			f, err := os.Open(archivePath)
			if err != nil {
				return nil, fmt.Errorf("opening image archive: %w", err)
			}
			defer f.Close()
			a, err := unpackArchive(f, dir)
			if err != nil {
				return nil, fmt.Errorf("reading %s from %s: %w", ref, archivePath, err)
			}
			return a, nil
		}
		if _, err := eng.ImageInspect(ctx, ref); err != nil {
			if errors.Is(err, engine.ErrNotFound) {
				return nil, fmt.Errorf("image %s is not in local storage; load it (`podman load`, `outpost bundle load`) or build it first — Outpost never pulls", ref)
			}
			return nil, fmt.Errorf("inspecting image %s: %w", ref, err)
		}
		pr, pw := io.Pipe()
		saveErr := make(chan error, 1)
		go func() {
			err := eng.SaveImage(ctx, ref, pw)
			pw.CloseWithError(err)
			saveErr <- err
		}()
		a, err := unpackArchive(pr, dir)
		pr.CloseWithError(errors.New("archive reader stopped"))
		if serr := <-saveErr; serr != nil {
			return nil, fmt.Errorf("exporting image %s from Podman: %w", ref, serr)
		}
		if err != nil {
			return nil, fmt.Errorf("reading image %s: %w", ref, err)
		}
		return a, nil
	}
}

type resultFunc func(check string, st Status, detail string, notes ...string) Result

// labelsCheck requires the configured (or default) labels, non-empty.
func labelsCheck(result resultFunc, labels map[string]string, required []string) Result {
	if len(required) == 0 {
		required = DefaultRequiredLabels
	}
	var missing []string
	for _, l := range required {
		if strings.TrimSpace(labels[l]) == "" {
			missing = append(missing, l)
		}
	}
	var notes []string
	var rec []string
	for _, l := range recommendedLabels {
		if strings.TrimSpace(labels[l]) == "" {
			rec = append(rec, l)
		}
	}
	if len(rec) > 0 {
		notes = append(notes, "recommended but missing: "+strings.Join(rec, ", "))
	}
	if len(missing) > 0 {
		return result(CheckLabels, Fail, fmt.Sprintf("missing required label(s) %s; add them in the Dockerfile (LABEL %s=...) or the build's --label", strings.Join(missing, ", "), missing[0]), notes...)
	}
	parts := make([]string, 0, len(required))
	for _, l := range required {
		parts = append(parts, strings.TrimPrefix(l, "org.opencontainers.image.")+"="+labels[l])
	}
	return result(CheckLabels, Pass, strings.Join(parts, " "), notes...)
}

// dropPrivileges matches commands that switch to another user.
var dropPrivileges = regexp.MustCompile(`\b(gosu|su-exec|setpriv|runuser|s6-setuidgid|setuidgid)\b|\bchpst\s+-u\b|\bchroot\s+--userspec\b|\bsu\s+(-\S+\s+)*\S+\s+-c\b|\bsu\s+-c\b`)

// entrypointOf is what a service's container runs first: the Compose
// entrypoint (and command) when set, else the image's.
func entrypointOf(cfg v1.Config, s *model.Service) []string {
	ep := cfg.Entrypoint
	if s.Entrypoint != nil {
		ep = s.Entrypoint
	}
	cmd := cfg.Cmd
	if s.Command != nil {
		cmd = s.Command
	}
	return append(append([]string{}, ep...), cmd...)
}

// scriptCandidates are the image paths an entrypoint's words may name:
// absolute paths, and bare names looked up in PATH (or the working
// directory for ./x).
func scriptCandidates(argv []string, env []string, workdir string) []string {
	pathDirs := []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathDirs = strings.Split(v, ":")
		}
	}
	var out []string
	for i, w := range argv {
		if i > 4 || w == "" || strings.HasPrefix(w, "-") || strings.ContainsAny(w, " \t;|&$") {
			continue
		}
		switch {
		case path.IsAbs(w):
			out = append(out, path.Clean(w))
		case strings.HasPrefix(w, "./"):
			if workdir == "" {
				workdir = "/"
			}
			out = append(out, path.Join(workdir, w))
		case !strings.Contains(w, "/"):
			for _, d := range pathDirs {
				if path.IsAbs(d) {
					out = append(out, path.Join(d, w))
				}
			}
		}
	}
	return out
}

// rootUser reports whether user (an image USER or Compose user:, "name",
// "uid", "name:group") runs as uid 0, resolving names through the image's
// /etc/passwd. known is false when a name cannot be resolved.
func rootUser(user string, passwd []byte) (root, known bool) {
	u, _, _ := strings.Cut(strings.TrimSpace(user), ":")
	if u == "" || u == "root" {
		return true, true
	}
	if n, err := strconv.Atoi(u); err == nil {
		return n == 0, true
	}
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == u {
			return f[2] == "0", true
		}
	}
	return false, false
}

// nonRootCheck: every service's container runs as a non-root user, or
// starts as root with an entrypoint that drops privileges.
func nonRootCheck(result resultFunc, cfg v1.Config, services []*model.Service, files map[string][]byte, privilegeDrop []string) Result {
	declared := map[string]bool{}
	for _, s := range privilegeDrop {
		declared[s] = true
	}
	passwd := files["/etc/passwd"]
	imgRoot, imgKnown := rootUser(cfg.User, passwd)
	st := Pass
	var notes []string
	imgUser := cfg.User
	if imgUser == "" {
		imgUser = "root (no USER)"
	}
	detail := "runs as " + imgUser
	dropped := false
	for _, s := range services {
		user, root, known := cfg.User, imgRoot, imgKnown
		if s.User != "" {
			user = s.User
			root, known = rootUser(s.User, passwd)
			notes = append(notes, fmt.Sprintf("%s: Compose sets user %q", s.Name, s.User))
		}
		switch {
		case !known:
			st = worst(st, Warn)
			notes = append(notes, fmt.Sprintf("%s: user %q is not in the image's /etc/passwd; the container may not start", s.Name, user))
		case !root:
		case declared[s.Name]:
			dropped = true
			notes = append(notes, fmt.Sprintf("%s: starts as root; x-outpost.checks.privilege_drop declares that its entrypoint drops privileges", s.Name))
		default:
			argv := entrypointOf(cfg, s)
			if how := dropEvidence(argv, cfg, files); how != "" {
				st = worst(st, Warn)
				notes = append(notes, fmt.Sprintf("%s: starts as root; %s — if so, declare it in x-outpost.checks.privilege_drop", s.Name, how))
			} else {
				st = worst(st, Fail)
				notes = append(notes, fmt.Sprintf("%s: runs as root (entrypoint %q)", s.Name, strings.Join(argv, " ")))
			}
		}
	}
	switch {
	case st == Pass && dropped:
		detail = "starts as root and drops privileges in its entrypoint (declared in x-outpost.checks.privilege_drop)"
	case st == Fail:
		detail = "runs as root: set USER to a non-root user in the Dockerfile (or user: in the Compose file), or drop privileges in the entrypoint and declare it in x-outpost.checks.privilege_drop"
	case st == Warn:
		detail = "starts as root or as an unknown user; see notes"
	}
	return result(CheckNonRoot, st, detail, notes...)
}

// dropEvidence says how the entrypoint appears to drop privileges, "" when
// it does not.
func dropEvidence(argv []string, cfg v1.Config, files map[string][]byte) string {
	if m := dropPrivileges.FindString(strings.Join(argv, " ")); m != "" {
		return fmt.Sprintf("the entrypoint runs %q", m)
	}
	for _, p := range scriptCandidates(argv, cfg.Env, cfg.WorkingDir) {
		b, ok := files[p]
		if !ok || !looksText(b) {
			continue
		}
		if m := dropPrivileges.Find(b); m != nil {
			return fmt.Sprintf("its entrypoint script %s runs %q", p, m)
		}
	}
	return ""
}

// maxNotes bounds the findings listed per check.
const maxNotes = 40

// secretsCheck reports secrets in the environment and in the layers.
func secretsCheck(result resultFunc, env []string, scan *layerScan, ignore *globMatcher, layers int) Result {
	findings := append(ScanEnv(env, ignore.name), scan.Findings...)
	st := Pass
	var notes []string
	fails := 0
	for _, f := range findings {
		if f.Severity == SeverityFail {
			st = worst(st, Fail)
			fails++
		} else {
			st = worst(st, Warn)
		}
		if len(notes) < maxNotes {
			prefix := "WARN "
			if f.Severity == SeverityFail {
				prefix = "FAIL "
			}
			notes = append(notes, prefix+f.String())
		}
	}
	if len(findings) > maxNotes {
		notes = append(notes, fmt.Sprintf("... and %d more", len(findings)-maxNotes))
	}
	if scan.Ignored > 0 {
		notes = append(notes, fmt.Sprintf("%d candidate file(s) skipped by x-outpost.checks.secrets_ignore", scan.Ignored))
	}
	var detail string
	switch st {
	case Pass:
		detail = fmt.Sprintf("none in %d environment variables and %d layers", len(env), layers)
	case Warn:
		detail = fmt.Sprintf("%d possible secret(s) to review (in test/doc trees or key stores); exempt reviewed paths with x-outpost.checks.secrets_ignore", len(findings))
	default:
		detail = fmt.Sprintf("%d secret(s) baked into the image: pass them at run time (environment, x-outpost.secrets, mounted files) and rebuild without them", fails)
	}
	return result(CheckSecrets, st, detail, notes...)
}

// healthcheckCheck: the image declares a HEALTHCHECK, or every service
// using it has a Compose healthcheck.
func healthcheckCheck(result resultFunc, hc *v1.HealthConfig, services []*model.Service) Result {
	if hc != nil && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
		var unprobed []string
		for _, s := range services {
			if s.Healthcheck == nil {
				unprobed = append(unprobed, s.Name)
			}
		}
		var notes []string
		if len(unprobed) > 0 {
			notes = append(notes, fmt.Sprintf("Outpost runs the Compose healthcheck, not the image's: give %s a healthcheck: in the Compose file to have it probed", strings.Join(unprobed, ", ")))
		}
		return result(CheckHealthcheck, Pass, "image HEALTHCHECK: "+strings.Join(hc.Test, " "), notes...)
	}
	var missing, markersOnly []string
	for _, s := range services {
		switch {
		case s.Healthcheck != nil:
		case len(s.ReadyMarkers) > 0:
			markersOnly = append(markersOnly, s.Name)
		default:
			missing = append(missing, s.Name)
		}
	}
	switch {
	case len(missing) > 0:
		return result(CheckHealthcheck, Fail, fmt.Sprintf("no HEALTHCHECK in the image and no healthcheck in the Compose file for %s: add one (HEALTHCHECK in the Dockerfile or healthcheck: in Compose)", strings.Join(missing, ", ")))
	case len(markersOnly) > 0:
		return result(CheckHealthcheck, Warn, fmt.Sprintf("no HEALTHCHECK and only ready markers for %s: a hung process is not detected; add a healthcheck", strings.Join(markersOnly, ", ")))
	}
	return result(CheckHealthcheck, Pass, "no image HEALTHCHECK; the Compose file defines one for every service")
}

// sizeCheck compares the sizes with the smallest budget among the
// services using the image.
func sizeCheck(result resultFunc, scan *layerScan, services []*model.Service, checks *model.Checks) Result {
	budget := func(m map[string]string) (int64, string) {
		var best int64 = -1
		var from string
		for _, s := range services {
			if v, ok := m[s.Name]; ok {
				n, err := units.FromHumanSize(v)
				if err == nil && (best < 0 || n < best) {
					best, from = n, s.Name
				}
			}
		}
		return best, from
	}
	st := Pass
	var parts []string
	for _, c := range []struct {
		what string
		size int64
		m    map[string]string
		key  string
	}{
		{"uncompressed", scan.Uncompressed, checks.SizeBudgets, "size_budgets"},
		{"compressed", scan.Compressed, checks.CompressedSizeBudgets, "compressed_size_budgets"},
	} {
		b, from := budget(c.m)
		switch {
		case b < 0:
			parts = append(parts, fmt.Sprintf("%s %s (no budget)", sizeOf(c.size), c.what))
		case c.size > b:
			st = Fail
			parts = append(parts, fmt.Sprintf("%s %s, OVER the %s budget %s (x-outpost.checks.%s.%s) by %s", sizeOf(c.size), c.what, c.what, sizeOf(b), c.key, from, sizeOf(c.size-b)))
		default:
			parts = append(parts, fmt.Sprintf("%s %s (budget %s)", sizeOf(c.size), c.what, sizeOf(b)))
		}
	}
	detail := strings.Join(parts, ", ")
	if st == Fail {
		detail += ": shrink the image (multi-stage build, fewer layers, no build tools) or raise the budget"
	}
	res := result(CheckSize, st, detail)
	res.Measured = map[string]int64{"uncompressed_bytes": scan.Uncompressed, "compressed_bytes": scan.Compressed}
	return res
}

// NotInArchives returns the image references of the selected services
// that neither the docker-archive files nor the bundle (when not empty)
// provides: what must come from Podman storage.
func NotInArchives(app *model.Appliance, services, archives []string, bundlePath string) ([]string, error) {
	uses, err := imageUses(app, services)
	if err != nil {
		return nil, err
	}
	idx, err := indexArchives(archives)
	if err != nil {
		return nil, err
	}
	inBundle := map[string]bool{}
	if bundlePath != "" {
		if inBundle, err = bundleRefs(bundlePath, uses); err != nil {
			return nil, err
		}
	}
	var out []string
	for _, u := range uses {
		if idx[normalizeRef(u.ref)] == "" && !inBundle[u.ref] {
			out = append(out, u.ref)
		}
	}
	return out, nil
}
