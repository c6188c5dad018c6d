// Package compose loads an appliance definition — one or more Compose files
// plus the top-level `x-outpost` extension — into a model.Appliance.
//
// compose-go does the Compose work (merging several files in order, .env and
// --env-file interpolation, profiles, extends/include, the Compose schema);
// this package decodes and validates x-outpost, maps every Compose attribute
// Outpost implements into the model, and reports every one it does not:
// errors where running without it would be wrong, warnings where ignoring it
// is safe. Problems name the file, line and key they come from, and Load
// reports all of them at once.
//
// The package is pure: it reads the files it is given (Compose files, env
// files, the env_file of services) and nothing else — no container engine,
// no network, no process environment except what the caller passes in
// Options.Environ. It is the only importer of compose-go.
package compose

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/outpostdev/outpost/appliance/model"
)

// Extension is the name of the top-level (and per-service) Compose extension
// Outpost reads.
const Extension = "x-outpost"

// Options for Load.
type Options struct {
	// Files are the Compose files (-f) in merge order: later files override
	// earlier ones. Required for Load; the caller resolves defaults such as
	// compose.yml. For LoadBytes they are merged after the in-memory document.
	Files []string
	// EnvFiles are env files (--env-file) for interpolation, read in order.
	// Default: ".env" beside the first file (or in WorkingDir for LoadBytes),
	// when it exists.
	EnvFiles []string
	// Profiles are the active Compose profiles (--profile). Services without
	// profiles always run; services with profiles run only when one of theirs
	// is active. "*" activates all.
	Profiles []string
	// Environ is the process environment used for interpolation (the caller
	// parses os.Environ). Its values take precedence over env files. Nothing
	// is read from the real process environment.
	Environ map[string]string
	// ProjectName overrides the appliance name (x-outpost.name, Compose
	// name:, the directory of the first file, in that order otherwise).
	ProjectName string
	// WorkingDir is the directory relative paths (bind mounts, env_file) are
	// resolved against. Default: the directory of the first file; for
	// LoadBytes without files, the current directory.
	WorkingDir string
}

// DefaultHealthListen is the internal health listener of the embedded proxy
// when x-outpost.proxy.health_listen is not set.
const DefaultHealthListen = "127.0.0.1:2020"

// DefaultJobTimeout bounds a job when x-outpost.jobs.<name>.timeout is not
// set, so a hung migration cannot block a start forever.
const DefaultJobTimeout = 30 * time.Minute

// DefaultSecretLength is the length of a generated secret when
// x-outpost.secrets.<name>.length is not set.
const DefaultSecretLength = 32

// Load reads opts.Files and returns the appliance they define, with warnings
// about what Outpost ignores. An invalid definition returns an error wrapping
// a *ValidationError that lists every problem (errors.Is(err, ErrInvalid)).
func Load(ctx context.Context, opts Options) (*model.Appliance, []Warning, error) {
	if len(opts.Files) == 0 {
		return nil, nil, errors.New("loading appliance: no Compose file given")
	}
	files, err := readFiles(opts.Files)
	if err != nil {
		return nil, nil, err
	}
	return load(ctx, files, filepath.Dir(files[0].path), opts)
}

// LoadBytes loads the in-memory Compose document data (e.g. the embedded
// demo appliance), merged with opts.Files if any. name is the pseudo file
// name used in messages.
func LoadBytes(ctx context.Context, name string, data []byte, opts Options) (*model.Appliance, []Warning, error) {
	if name == "" {
		name = "compose.yml"
	}
	rest, err := readFiles(opts.Files)
	if err != nil {
		return nil, nil, err
	}
	files := append([]*sourceFile{{display: name, path: name, content: append([]byte(nil), data...)}}, rest...)
	baseDir := opts.WorkingDir
	if baseDir == "" && len(rest) > 0 {
		baseDir = filepath.Dir(rest[0].path)
	}
	return load(ctx, files, baseDir, opts)
}

func readFiles(names []string) ([]*sourceFile, error) {
	files := make([]*sourceFile, 0, len(names))
	for _, n := range names {
		abs, err := filepath.Abs(n)
		if err != nil {
			return nil, fmt.Errorf("loading %s: %w", n, err)
		}
		b, err := os.ReadFile(abs)
		if err != nil {
			return nil, fmt.Errorf("loading Compose file: %w", err)
		}
		files = append(files, &sourceFile{display: n, path: abs, content: b})
	}
	return files, nil
}

// load is the common path of Load and LoadBytes. baseDir is the directory
// of the first file on disk ("" when there is none).
func load(ctx context.Context, files []*sourceFile, baseDir string, opts Options) (*model.Appliance, []Warning, error) {
	src, err := newSourceIndex(files)
	if err != nil {
		return nil, nil, fmt.Errorf("loading appliance: %w", err)
	}
	rep := &report{src: src}
	for _, f := range files {
		if line, ok := stripVersion(f); ok {
			rep.warnings = append(rep.warnings, Warning{File: f.display, Line: line, Key: "version",
				Message: "the top-level version attribute is obsolete and ignored; remove it"})
		}
	}

	workingDir := opts.WorkingDir
	if workingDir == "" {
		workingDir = baseDir
	}
	if workingDir == "" {
		workingDir = "."
	}
	if workingDir, err = filepath.Abs(workingDir); err != nil {
		return nil, nil, fmt.Errorf("loading appliance: resolving working directory: %w", err)
	}

	env, err := environment(opts, baseDir, workingDir)
	if err != nil {
		return nil, nil, err
	}

	name, explicit := projectName(opts, src, workingDir)
	unset := map[string]bool{}
	var findings []loader.UnsupportedAttribute
	collect := func(f []loader.UnsupportedAttribute) { findings = append(findings, f...) }

	configFiles := make([]types.ConfigFile, len(files))
	for i, f := range files {
		configFiles[i] = types.ConfigFile{Filename: f.path, Content: f.content}
	}
	project, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  workingDir,
		ConfigFiles: configFiles,
		Environment: env,
	},
		func(o *loader.Options) {
			// compose-go logs unset variables through a global logger;
			// Outpost reports them as warnings instead.
			o.Interpolate.Substitute = func(s string, m template.Mapping) (string, error) {
				for _, v := range plainVarRefs(s) {
					if _, ok := m(v); !ok {
						unset[v] = true
					}
				}
				return template.SubstituteWithOptions(s, m, template.WithoutLogging)
			}
			o.SetProjectName(name, explicit)
			// Outpost checks references itself, reporting all problems
			// with their files, and lets services depend on x-outpost jobs.
			o.SkipConsistencyCheck = true
			o.Profiles = append([]string(nil), opts.Profiles...)
		},
		loader.WithUnsupportedAttributesCheck(valuePatterns, collect),
		loader.WithSupportedAttributes(supportedPaths(), collect),
	)
	if err != nil {
		if verr := missingVariables(err, src); verr != nil {
			return nil, nil, fmt.Errorf("loading appliance: %w", verr)
		}
		if verr := schemaProblem(err, files); verr != nil {
			return nil, nil, fmt.Errorf("loading appliance: %w", verr)
		}
		return nil, nil, fmt.Errorf("loading appliance: %w", err)
	}

	for _, v := range sortedKeys(unset) {
		msg := fmt.Sprintf("variable %s is not set and is replaced by an empty string; set it in the environment, in .env or in an --env-file, or write ${%s:-default}", v, v)
		at := src.varRefs(v, "${"+v+"}", "$"+v)
		if len(at) == 0 {
			rep.warnings = append(rep.warnings, Warning{Message: msg})
		}
		for _, p := range at {
			p.Message = msg
			rep.warnings = append(rep.warnings, Warning(p))
		}
	}

	sources := make([]string, len(files))
	for i, f := range files {
		sources[i] = f.path
	}
	c := &converter{
		project:  project,
		src:      src,
		rep:      rep,
		opts:     opts,
		baseDir:  baseDir,
		findings: findings,
		sources:  sources,
	}
	a := c.convert()
	if err := rep.err(); err != nil {
		return nil, rep.sortedWarnings(), fmt.Errorf("loading appliance: %w", err)
	}
	return a, rep.sortedWarnings(), nil
}

// environment builds the interpolation environment: opts.Environ, then the
// env files for variables Environ does not set.
func environment(opts Options, baseDir, workingDir string) (map[string]string, error) {
	env := maps.Clone(opts.Environ)
	if env == nil {
		env = map[string]string{}
	}
	envFiles := opts.EnvFiles
	if len(envFiles) == 0 {
		dir := baseDir
		if dir == "" && opts.WorkingDir != "" {
			dir = workingDir
		}
		if dir != "" {
			def := filepath.Join(dir, ".env")
			if st, err := os.Stat(def); err == nil && !st.IsDir() {
				envFiles = []string{def}
			}
		}
	}
	if len(envFiles) == 0 {
		return env, nil
	}
	fromFiles, err := dotenv.GetEnvFromFile(env, envFiles)
	if err != nil {
		return nil, fmt.Errorf("loading appliance: reading env files: %w", err)
	}
	for k, v := range fromFiles {
		if _, set := env[k]; !set {
			env[k] = v
		}
	}
	return env, nil
}

// projectName picks the name compose-go loads the project under (it names
// COMPOSE_PROJECT_NAME for interpolation). The appliance name is settled
// after loading, once an interpolated x-outpost.name is known; a literal
// x-outpost.name is used here already so both agree.
func projectName(opts Options, src *sourceIndex, workingDir string) (string, bool) {
	if n := loader.NormalizeProjectName(opts.ProjectName); n != "" {
		return n, true
	}
	if v, ok := src.scalar(Extension + ".name"); ok && !strings.Contains(v, "$") {
		if n := loader.NormalizeProjectName(v); n != "" {
			return n, true
		}
	}
	return loader.NormalizeProjectName(filepath.Base(workingDir)), false
}

// missingVariables turns compose-go's "required variable X is missing a
// value" errors into problems located where the files require X.
func missingVariables(err error, src *sourceIndex) error {
	var missing []*template.MissingRequiredError
	walkErrors(err, func(e error) {
		if m, ok := e.(*template.MissingRequiredError); ok {
			missing = append(missing, m)
		}
	})
	if len(missing) == 0 {
		return nil
	}
	rep := &report{src: src}
	for _, m := range missing {
		msg := fmt.Sprintf("required variable %s is not set", m.Variable)
		if m.Reason != "" {
			msg += " (" + m.Reason + ")"
		}
		msg += fmt.Sprintf("; set %s in the environment, in .env or in an --env-file", m.Variable)
		at := src.varRefs(m.Variable, "${"+m.Variable+":?", "${"+m.Variable+"?")
		if len(at) == 0 {
			rep.problems = append(rep.problems, Problem{Message: msg})
			continue
		}
		for _, p := range at {
			p.Message = msg
			rep.problems = append(rep.problems, p)
		}
	}
	return rep.err()
}

// schemaProblem turns compose-go's "validating FILE: KEY message" (a file
// that breaks the Compose schema) into a located problem.
func schemaProblem(err error, files []*sourceFile) error {
	msg := err.Error()
	for _, f := range files {
		rest, ok := strings.CutPrefix(msg, "validating "+f.path+": ")
		if !ok {
			continue
		}
		p := Problem{File: f.display, Message: rest}
		if key, m, ok := strings.Cut(rest, " "); ok && key != "" && !strings.ContainsAny(key, "'\"") {
			p.Key, p.Message = key, m
			if depth, line := f.lookup(splitKey(key)); depth > 0 {
				p.Line = line
			}
		}
		return &ValidationError{Problems: []Problem{p}}
	}
	return nil
}

// varRefRe matches $$ (an escaped dollar), ${NAME} and $NAME: the
// references that fall back to an empty string when NAME is unset.
var varRefRe = regexp.MustCompile(`\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))`)

// plainVarRefs lists the variables s references without a default or a
// required marker.
func plainVarRefs(s string) []string {
	var out []string
	for _, m := range varRefRe.FindAllStringSubmatch(s, -1) {
		switch {
		case m[2] != "":
			out = append(out, m[2])
		case m[3] != "":
			out = append(out, m[3])
		}
	}
	return out
}

// walkErrors calls fn on err and everything it wraps.
func walkErrors(err error, fn func(error)) {
	if err == nil {
		return
	}
	fn(err)
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			walkErrors(e, fn)
		}
	case interface{ Unwrap() error }:
		walkErrors(u.Unwrap(), fn)
	}
}
