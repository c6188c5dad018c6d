package cli

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/demo"
	"github.com/outpostdev/outpost/appliance/model"
	assets "github.com/outpostdev/outpost/embed"
)

// defaultFiles are looked for in the working directory when no -f is given,
// in Compose's order.
var defaultFiles = []string{"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}

// demoFile is the embedded demo appliance's Compose file.
const demoFile = "demo/compose.yml"

// defOptions are the flags that select an appliance definition.
type defOptions struct {
	files    []string
	envFiles []string
	profiles []string
	name     string
}

func (o *defOptions) register(fs *pflag.FlagSet) {
	o.registerFile(fs, "f")
}

// registerFile registers the definition flags with the given shorthand for
// --file ("" for none: `logs` uses -f for --follow, as Compose does).
func (o *defOptions) registerFile(fs *pflag.FlagSet, short string) {
	fs.StringArrayVarP(&o.files, "file", short, nil, "Compose file (repeat to merge in order)")
	fs.StringArrayVar(&o.envFiles, "env-file", nil, "environment file for interpolation (default .env beside the first file)")
	fs.StringArrayVar(&o.profiles, "profile", nil, "Compose profile to activate (repeatable)")
	fs.StringVarP(&o.name, "name", "n", "", "appliance name (overrides x-outpost.name)")
}

func (o *defOptions) given() bool { return len(o.files) > 0 }

// localDefinition reports whether the working directory has a Compose file
// that `up` would read without -f.
func localDefinition() bool {
	for _, f := range defaultFiles {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// loaded is a definition with where it came from.
type loaded struct {
	app  *model.Appliance
	demo bool
}

// load reads the definition: the -f files, else a Compose file in the
// working directory, else the embedded demo appliance.
func (o *defOptions) load(ctx context.Context, g *globals) (*loaded, error) {
	opts := compose.Options{Files: o.files, EnvFiles: o.envFiles, Profiles: o.profiles, ProjectName: o.name, Environ: environ()}
	if len(opts.Files) == 0 {
		for _, f := range defaultFiles {
			if _, err := os.Stat(f); err == nil {
				opts.Files = []string{f}
				break
			}
		}
	}
	var (
		app      *model.Appliance
		warnings []compose.Warning
		err      error
		isDemo   bool
	)
	if len(opts.Files) == 0 {
		data, rerr := assets.FS.ReadFile(demoFile)
		if rerr != nil {
			return nil, fmt.Errorf("reading embedded demo: %w", rerr)
		}
		fmt.Fprintln(g.streams.Err, "no -f given and no compose.yaml here: using the embedded demo appliance")
		app, warnings, err = compose.LoadBytes(ctx, "embedded:"+demoFile, data, opts)
		isDemo = true
	} else {
		app, warnings, err = compose.Load(ctx, opts)
	}
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintln(g.streams.Err, "warning:", w.String())
	}
	if err := captureProxy(g, app, opts); err != nil {
		return nil, err
	}
	return &loaded{app: app, demo: isDemo}, nil
}

// prepare makes what a definition needs locally available (the demo image).
func (l *loaded) prepare(ctx context.Context, env *daemon.Env) error {
	if !l.demo {
		return nil
	}
	if _, err := demo.EnsureImage(ctx, env.Engine, demo.DefaultImage, "", env.Log); err != nil {
		return fmt.Errorf("building the demo image offline: %w", err)
	}
	return nil
}

func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// deployed resolves which deployed appliance a command acts on: the one the
// definition flags name, else the one of the Compose file in the working
// directory (as Compose does), else the only one in the store.
func (o *defOptions) deployed(ctx context.Context, g *globals, env *daemon.Env) (*model.Appliance, error) {
	name := o.name
	if name == "" && o.given() {
		l, err := o.load(ctx, g)
		if err != nil {
			return nil, err
		}
		name = l.app.Name
	} else if name == "" && localDefinition() {
		// A local file that does not load (say it needs a variable only
		// the deploy had) is no reason to refuse: fall back to the store.
		if l, err := o.load(ctx, g); err == nil {
			name = l.app.Name
		}
	}
	if name == "" {
		names, err := env.Store.Appliances(ctx)
		if err != nil {
			return nil, err
		}
		switch len(names) {
		case 0:
			return nil, daemon.ErrNoAppliance
		case 1:
			name = names[0]
		default:
			return nil, fmt.Errorf("the state holds several appliances (%s) and no Compose file here names one; choose with --name", strings.Join(names, ", "))
		}
	}
	app, _, err := env.Runtime.Deployed(ctx, name)
	return app, err
}

// withDeployed opens the state (and Podman when needEngine), resolves the
// deployed appliance the definition flags select, and calls fn.
func (g *globals) withDeployed(ctx context.Context, def *defOptions, needEngine bool, fn func(context.Context, *daemon.Env, *model.Appliance) error) error {
	p, err := g.paths()
	if err != nil {
		return err
	}
	open := daemon.Open
	if !needEngine {
		open = daemon.OpenState
	}
	env, err := open(ctx, p, g.log)
	if err != nil {
		return err
	}
	defer env.Close()
	app, err := def.deployed(ctx, g, env)
	if err != nil {
		return err
	}
	return fn(ctx, env, app)
}
