package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// benchService is the part of a Compose service the bench needs to run it
// alone with `podman run` and to probe it with `podman exec`.
type benchService struct {
	Name    string
	Image   string
	Command []string
	Env     []string // KEY=VALUE, sorted
	Volumes []string // SOURCE:TARGET[:MODE]; SOURCE is a volume key or a path
	Deps    []string // depends_on, sorted
	Probe   []string // healthcheck test as an argv for `podman exec`
}

// benchApp is the bench's view of the Compose file.
type benchApp struct {
	Services map[string]*benchService
	Order    []string // topological, ties by name
}

// composeFile is the subset of the Compose schema the bench reads.
type composeFile struct {
	Services map[string]struct {
		Image       string    `yaml:"image"`
		Command     yaml.Node `yaml:"command"`
		Environment yaml.Node `yaml:"environment"`
		Volumes     []string  `yaml:"volumes"`
		DependsOn   yaml.Node `yaml:"depends_on"`
		Healthcheck struct {
			Test yaml.Node `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// loadCompose reads path into a benchApp. It supports what the bench's
// compose.yml uses: list or string command, map or list environment,
// short volume syntax, map or list depends_on, CMD / CMD-SHELL healthchecks.
func loadCompose(path string) (*benchApp, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	if len(f.Services) == 0 {
		return nil, fmt.Errorf("%s: no services", path)
	}
	app := &benchApp{Services: map[string]*benchService{}}
	for name, s := range f.Services {
		svc := &benchService{Name: name, Image: s.Image, Volumes: s.Volumes}
		if svc.Image == "" {
			return nil, fmt.Errorf("%s: service %s: no image", path, name)
		}
		switch s.Command.Kind {
		case 0:
		case yaml.ScalarNode:
			svc.Command = strings.Fields(s.Command.Value)
		case yaml.SequenceNode:
			if err := s.Command.Decode(&svc.Command); err != nil {
				return nil, fmt.Errorf("%s: service %s: command: %w", path, name, err)
			}
		default:
			return nil, fmt.Errorf("%s: service %s: unsupported command form", path, name)
		}
		switch s.Environment.Kind {
		case 0:
		case yaml.MappingNode:
			var m map[string]string
			if err := s.Environment.Decode(&m); err != nil {
				return nil, fmt.Errorf("%s: service %s: environment: %w", path, name, err)
			}
			for k, v := range m {
				svc.Env = append(svc.Env, k+"="+v)
			}
		case yaml.SequenceNode:
			if err := s.Environment.Decode(&svc.Env); err != nil {
				return nil, fmt.Errorf("%s: service %s: environment: %w", path, name, err)
			}
		default:
			return nil, fmt.Errorf("%s: service %s: unsupported environment form", path, name)
		}
		sort.Strings(svc.Env)
		switch s.DependsOn.Kind {
		case 0:
		case yaml.MappingNode:
			var m map[string]yaml.Node
			if err := s.DependsOn.Decode(&m); err != nil {
				return nil, fmt.Errorf("%s: service %s: depends_on: %w", path, name, err)
			}
			for k := range m {
				svc.Deps = append(svc.Deps, k)
			}
		case yaml.SequenceNode:
			if err := s.DependsOn.Decode(&svc.Deps); err != nil {
				return nil, fmt.Errorf("%s: service %s: depends_on: %w", path, name, err)
			}
		default:
			return nil, fmt.Errorf("%s: service %s: unsupported depends_on form", path, name)
		}
		sort.Strings(svc.Deps)
		var test []string
		switch s.Healthcheck.Test.Kind {
		case yaml.ScalarNode:
			test = []string{"CMD-SHELL", s.Healthcheck.Test.Value}
		case yaml.SequenceNode:
			if err := s.Healthcheck.Test.Decode(&test); err != nil {
				return nil, fmt.Errorf("%s: service %s: healthcheck.test: %w", path, name, err)
			}
		}
		switch {
		case len(test) >= 2 && test[0] == "CMD":
			svc.Probe = test[1:]
		case len(test) == 2 && test[0] == "CMD-SHELL":
			svc.Probe = []string{"/bin/sh", "-c", test[1]}
		default:
			return nil, fmt.Errorf("%s: service %s: the bench needs a CMD or CMD-SHELL healthcheck", path, name)
		}
		app.Services[name] = svc
	}
	for name, svc := range app.Services {
		for _, d := range svc.Deps {
			if _, ok := app.Services[d]; !ok {
				return nil, fmt.Errorf("%s: service %s depends on unknown service %s", path, name, d)
			}
		}
	}
	order, err := topoOrder(app.Services)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	app.Order = order
	return app, nil
}

// topoOrder orders services so that each comes after its dependencies.
func topoOrder(svcs map[string]*benchService) ([]string, error) {
	var order []string
	done := map[string]bool{}
	for len(order) < len(svcs) {
		var ready []string
		for name, s := range svcs {
			if done[name] {
				continue
			}
			ok := true
			for _, d := range s.Deps {
				ok = ok && done[d]
			}
			if ok {
				ready = append(ready, name)
			}
		}
		if len(ready) == 0 {
			return nil, fmt.Errorf("depends_on has a cycle")
		}
		sort.Strings(ready)
		for _, n := range ready {
			done[n] = true
		}
		order = append(order, ready...)
	}
	return order, nil
}

// criticalPath returns the dependency chain with the largest sum of
// weights and that sum.
func (a *benchApp) criticalPath(weight map[string]time.Duration) ([]string, time.Duration) {
	best := map[string]time.Duration{}
	prev := map[string]string{}
	for _, n := range a.Order {
		var base time.Duration
		for _, d := range a.Services[n].Deps {
			if prev[n] == "" || best[d] > base {
				base = best[d]
				prev[n] = d
			}
		}
		best[n] = base + weight[n]
	}
	var end string
	for _, n := range a.Order {
		if end == "" || best[n] > best[end] {
			end = n
		}
	}
	var path []string
	for n := end; n != ""; n = prev[n] {
		path = append([]string{n}, path...)
	}
	return path, best[end]
}

// longestChain is the chain with the most services (the structural
// critical path, before any timing is known).
func (a *benchApp) longestChain() []string {
	w := map[string]time.Duration{}
	for n := range a.Services {
		w[n] = 1
	}
	p, _ := a.criticalPath(w)
	return p
}
