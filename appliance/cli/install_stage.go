package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/service"
	assets "github.com/outpostdev/outpost/embed"
)

// maxStagedBytes bounds what install copies from a project directory, so a
// data directory bound into a service is not copied into /etc by accident.
const maxStagedBytes = 256 << 20

// staged is a definition copied into an appliance's config directory.
type staged struct {
	// args are the definition flags of `outpost run` for the copy.
	args []string
	// files are the copied paths, relative to the config directory.
	files []string
	// changed is true when any copied file is new or different.
	changed bool
	// app is the copy loaded as the daemon will load it.
	app *model.Appliance
}

// stageDefinition copies the definition into lay.ConfigDir: the Compose
// files, the env files (--env-file, else the .env beside the first file),
// and the files below the first file's directory that the definition reads
// at load or binds into services (env_file:, bind-mount sources). It then
// loads the copy with the environment the service will have and refuses
// when it resolves differently from what the operator loaded, naming the
// first difference.
func stageDefinition(ctx context.Context, def defOptions, l *loaded, lay service.Layout, acct service.Account, containerHost string) (*staged, error) {
	st := &staged{}
	dst := lay.ConfigDir
	copyFile := func(rel string, data []byte, mode fs.FileMode) error {
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o750); err != nil {
			return fmt.Errorf("copying the definition: %w", err)
		}
		changed, err := service.WriteFileOwned(filepath.Join(dst, rel), data, mode, -1, acct.GID)
		if err != nil {
			return fmt.Errorf("copying the definition: %w", err)
		}
		st.changed = st.changed || changed
		st.files = append(st.files, rel)
		return nil
	}

	files := def.files
	if len(files) == 0 && !l.demo {
		for _, f := range defaultFiles {
			if _, err := os.Stat(f); err == nil {
				files = []string{f}
				break
			}
		}
	}
	var runFiles, runEnv []string
	if l.demo {
		data, err := assets.FS.ReadFile(demoFile)
		if err != nil {
			return nil, fmt.Errorf("reading the embedded demo: %w", err)
		}
		if err := copyFile("compose.yml", data, 0o640); err != nil {
			return nil, err
		}
		runFiles = []string{filepath.Join(dst, "compose.yml")}
	} else {
		project, err := filepath.Abs(filepath.Dir(files[0]))
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", files[0], err)
		}
		seen := map[string]string{}
		add := func(path, what string) (string, error) {
			abs, err := filepath.Abs(path)
			if err != nil {
				return "", fmt.Errorf("resolving %s: %w", path, err)
			}
			rel := filepath.Base(abs)
			if r, err := filepath.Rel(project, abs); err == nil && !strings.HasPrefix(r, "..") {
				rel = r
			}
			if other, dup := seen[rel]; dup && other != abs {
				return "", fmt.Errorf("%s %s and %s would both be copied to %s; rename one", what, other, abs, filepath.Join(dst, rel))
			}
			seen[rel] = abs
			data, err := os.ReadFile(abs)
			if err != nil {
				return "", fmt.Errorf("reading %s %s: %w", what, path, err)
			}
			return rel, copyFile(rel, data, 0o640)
		}
		for _, f := range files {
			rel, err := add(f, "Compose file")
			if err != nil {
				return nil, err
			}
			runFiles = append(runFiles, filepath.Join(dst, rel))
		}
		envFiles := def.envFiles
		if len(envFiles) == 0 {
			if _, err := os.Stat(filepath.Join(project, ".env")); err == nil {
				if _, err := add(filepath.Join(project, ".env"), "env file"); err != nil {
					return nil, err
				}
			}
		}
		for _, f := range envFiles {
			rel, err := add(f, "env file")
			if err != nil {
				return nil, err
			}
			runEnv = append(runEnv, filepath.Join(dst, rel))
		}
		if p := l.app.Proxy; p != nil {
			for what, f := range map[string]string{"Caddyfile": p.Caddyfile, "maintenance page": p.MaintenancePage} {
				if f == "" {
					continue
				}
				if !filepath.IsAbs(f) {
					f = filepath.Join(project, f)
				}
				if within(project, f) {
					if _, err := add(f, what); err != nil {
						return nil, err
					}
				}
			}
		}
		refs, err := serviceEnvFiles(files, project)
		if err != nil {
			return nil, err
		}
		for _, f := range refs {
			if _, err := add(f, "env_file"); err != nil {
				return nil, err
			}
		}
		var budget int64 = maxStagedBytes
		for _, p := range bindSources(l.app, project) {
			if err := copyTree(p, filepath.Join(dst, mustRel(project, p)), acct.GID, &budget); err != nil {
				return nil, err
			}
			st.changed = true // trees are small; recopying is cheaper than comparing
			st.files = append(st.files, mustRel(project, p))
		}
	}
	for _, f := range runFiles {
		st.args = append(st.args, "-f", f)
	}
	for _, f := range runEnv {
		st.args = append(st.args, "--env-file", f)
	}
	for _, p := range def.profiles {
		st.args = append(st.args, "--profile", p)
	}
	st.args = append(st.args, "--name", l.app.Name)

	// Load the copy as `outpost run` will: its files, the unit's environment.
	environ := map[string]string{"HOME": acct.Home, "USER": acct.Name, "LOGNAME": acct.Name, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, kv := range lay.Env(containerHost) {
		k, v, _ := strings.Cut(kv, "=")
		environ[k] = v
	}
	copyOpts := compose.Options{Files: runFiles, EnvFiles: runEnv, Profiles: def.profiles, ProjectName: l.app.Name, Environ: environ}
	copyApp, _, err := compose.Load(ctx, copyOpts)
	if err == nil {
		// As defOptions.load does; its warnings were shown for the original.
		err = captureProxy(&globals{streams: Streams{Err: io.Discard}}, copyApp, copyOpts)
	}
	if err != nil {
		return nil, fmt.Errorf("the copy of the definition in %s does not load as the service will load it: %w", dst, err)
	}
	if diff := definitionDiff(l.app, copyApp, l, files, dst); diff != "" {
		return nil, fmt.Errorf("the definition resolves differently under the service's environment than in this shell (%s); "+
			"put the variables it uses into an env file and pass it with --env-file", diff)
	}
	st.app = copyApp
	return st, nil
}

// serviceEnvFiles reads the env_file entries of every service in the
// Compose files (they are read at load time, relative to project).
func serviceEnvFiles(files []string, project string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		var doc struct {
			Services map[string]struct {
				EnvFile any `yaml:"env_file"`
			} `yaml:"services"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			// compose already loaded it; anchors or tags it accepts are no
			// reason to fail here.
			continue
		}
		for _, s := range doc.Services {
			var paths []string
			switch v := s.EnvFile.(type) {
			case string:
				paths = append(paths, v)
			case []any:
				for _, e := range v {
					switch e := e.(type) {
					case string:
						paths = append(paths, e)
					case map[string]any:
						if p, ok := e["path"].(string); ok {
							paths = append(paths, p)
						}
					}
				}
			}
			for _, p := range paths {
				if strings.Contains(p, "$") {
					continue // interpolated: the reload check reports it
				}
				if !filepath.IsAbs(p) {
					p = filepath.Join(project, p)
				}
				if _, err := os.Stat(p); err != nil || seen[p] {
					continue // optional (required: false) or already listed
				}
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// bindSources lists the bind-mount sources below project.
func bindSources(app *model.Appliance, project string) []string {
	set := map[string]bool{}
	for _, svc := range app.Services {
		for _, m := range svc.Mounts {
			if m.Type == model.MountBind && m.Source != "" && within(project, m.Source) {
				set[filepath.Clean(m.Source)] = true
			}
		}
	}
	var out []string
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && r != "." && !strings.HasPrefix(r, "..") && !filepath.IsAbs(r)
}

func mustRel(base, p string) string {
	r, _ := filepath.Rel(base, p)
	return r
}

// copyTree copies a file or directory tree, root-owned with group gid,
// keeping permission bits (without setuid/setgid/sticky), and charging
// every byte to budget.
func copyTree(src, dst string, gid int, budget *int64) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		target := filepath.Join(dst, mustRel(src, p))
		if p == src {
			target = dst
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("copying %s: %w", p, err)
		}
		switch {
		case d.IsDir():
			return service.MkdirOwned(target, info.Mode().Perm(), -1, gid)
		case info.Mode().IsRegular():
			*budget -= info.Size()
			if *budget < 0 {
				return fmt.Errorf("bind-mount sources below the project directory exceed %d MiB (at %s); install copies them into /etc/outpost — use a named volume or an absolute path outside the project for data", maxStagedBytes>>20, p)
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("copying %s: %w", p, err)
			}
			if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
				return fmt.Errorf("copying %s: %w", p, err)
			}
			_, err = service.WriteFileOwned(target, data, info.Mode().Perm(), -1, gid)
			return err
		default:
			return nil // sockets, devices, symlinks: not configuration
		}
	})
}

// definitionDiff compares the definition the operator loaded with the copy
// the service will load and returns the first difference ("" when none).
// Paths below the project directory are compared relative to it.
func definitionDiff(orig, cp *model.Appliance, l *loaded, files []string, configDir string) string {
	norm := func(a *model.Appliance, base string) any {
		b, _ := json.Marshal(a)
		s := string(b)
		if base != "" {
			s = strings.ReplaceAll(s, base+"/", "<project>/")
		}
		var v map[string]any
		_ = json.Unmarshal([]byte(s), &v)
		delete(v, "sources")
		return v
	}
	origBase := ""
	if !l.demo && len(files) > 0 {
		if abs, err := filepath.Abs(filepath.Dir(files[0])); err == nil {
			origBase = abs
		}
	}
	return firstDiff("", norm(orig, origBase), norm(cp, configDir))
}

func firstDiff(path string, a, b any) string {
	if reflect.DeepEqual(a, b) {
		return ""
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := map[string]bool{}
		for k := range am {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		var ks []string
		for k := range keys {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if d := firstDiff(p, am[k], bm[k]); d != "" {
				return d
			}
		}
	}
	if path == "" {
		path = "definition"
	}
	return path
}

func lookupGroupName(gid int) (string, error) {
	g, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		return "", err
	}
	return g.Name, nil
}

// isTerminalFD reports whether fd is a terminal.
func isTerminalFD(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
