// Package plan turns an appliance definition into the order things start and
// stop in: a dependency graph over services and jobs, its topological levels,
// and the configuration hashes that decide whether a running container still
// matches its definition. It is pure: no I/O, no engine.
package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/outpostdev/outpost/appliance/model"
)

// NodeKind says whether a graph node is a long-running service or a one-shot job.
type NodeKind int

// Node kinds.
const (
	KindService NodeKind = iota
	KindJob
)

// Node is one vertex of the start graph.
type Node struct {
	Name string
	Kind NodeKind
	// Deps maps a node name to the condition this node waits for.
	Deps map[string]model.Dependency
}

// DAG is the start graph of an appliance. Build it with Graph.
type DAG struct {
	nodes map[string]*Node
	// dependants maps a node to the nodes that depend on it.
	dependants map[string][]string
	order      []string
	levels     [][]string
}

// CycleError reports a dependency cycle with its path.
type CycleError struct {
	Path []string
}

func (e *CycleError) Error() string {
	return fmt.Sprintf("dependency cycle: %s; break it by removing one depends_on entry", strings.Join(e.Path, " → "))
}

// Graph builds the start graph: services with their depends_on, jobs with
// their after (wait for healthy services / completed jobs) and before (those
// services wait for the job to complete successfully). Jobs are included only
// when include returns true for them (nil includes every job).
func Graph(a *model.Appliance, include func(*model.Job) bool) (*DAG, error) {
	d := &DAG{nodes: map[string]*Node{}, dependants: map[string][]string{}}
	for name, s := range a.Services {
		deps := make(map[string]model.Dependency, len(s.DependsOn))
		for dn, dep := range s.DependsOn {
			deps[dn] = dep
		}
		d.nodes[name] = &Node{Name: name, Kind: KindService, Deps: deps}
	}
	var problems []string
	for _, j := range a.Jobs {
		if include != nil && !include(j) {
			continue
		}
		if _, dup := d.nodes[j.Name]; dup {
			problems = append(problems, fmt.Sprintf("job %q has the name of a service; rename it", j.Name))
			continue
		}
		n := &Node{Name: j.Name, Kind: KindJob, Deps: map[string]model.Dependency{}}
		for _, after := range j.After {
			n.Deps[after] = model.Dependency{Condition: model.ConditionHealthy, Required: true}
		}
		d.nodes[j.Name] = n
	}
	for _, j := range a.Jobs {
		n, ok := d.nodes[j.Name]
		if !ok || n.Kind != KindJob {
			continue
		}
		for _, before := range j.Before {
			target, ok := d.nodes[before]
			if !ok {
				problems = append(problems, fmt.Sprintf("job %q: before: unknown service %q", j.Name, before))
				continue
			}
			target.Deps[j.Name] = model.Dependency{Condition: model.ConditionCompleted, Required: true}
		}
	}
	for _, name := range d.sortedNames() {
		n := d.nodes[name]
		for dep, cond := range n.Deps {
			target, ok := d.nodes[dep]
			if !ok {
				if !cond.Required {
					delete(n.Deps, dep)
					continue
				}
				problems = append(problems, fmt.Sprintf("%s depends on unknown service %q", name, dep))
				continue
			}
			if target.Kind == KindJob && cond.Condition == model.ConditionHealthy {
				// A job has no health; waiting for it means waiting for success.
				cond.Condition = model.ConditionCompleted
				n.Deps[dep] = cond
			}
			d.dependants[dep] = append(d.dependants[dep], name)
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("building start order: %s", strings.Join(problems, "; "))
	}
	for k := range d.dependants {
		sort.Strings(d.dependants[k])
	}
	if err := d.sort(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *DAG) sortedNames() []string {
	names := make([]string, 0, len(d.nodes))
	for n := range d.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// sort computes levels with Kahn's algorithm; a leftover node means a cycle.
func (d *DAG) sort() error {
	indeg := map[string]int{}
	for name, n := range d.nodes {
		indeg[name] = len(n.Deps)
	}
	var level []string
	for _, name := range d.sortedNames() {
		if indeg[name] == 0 {
			level = append(level, name)
		}
	}
	for len(level) > 0 {
		d.levels = append(d.levels, level)
		d.order = append(d.order, level...)
		var next []string
		for _, name := range level {
			for _, dep := range d.dependants[name] {
				indeg[dep]--
				if indeg[dep] == 0 {
					next = append(next, dep)
				}
			}
		}
		sort.Strings(next)
		level = next
	}
	if len(d.order) != len(d.nodes) {
		return &CycleError{Path: d.findCycle(indeg)}
	}
	return nil
}

// findCycle walks from a node left with unmet dependencies until a node repeats.
func (d *DAG) findCycle(indeg map[string]int) []string {
	var start string
	for _, name := range d.sortedNames() {
		if indeg[name] > 0 {
			start = name
			break
		}
	}
	seen := map[string]int{}
	var path []string
	cur := start
	for {
		if i, ok := seen[cur]; ok {
			return append(path[i:], cur)
		}
		seen[cur] = len(path)
		path = append(path, cur)
		var deps []string
		for dep := range d.nodes[cur].Deps {
			if indeg[dep] > 0 {
				deps = append(deps, dep)
			}
		}
		if len(deps) == 0 {
			return path
		}
		sort.Strings(deps)
		cur = deps[0]
	}
}

// Node returns the named node, or nil.
func (d *DAG) Node(name string) *Node { return d.nodes[name] }

// Order returns every node in a start order (dependencies first).
func (d *DAG) Order() []string { return append([]string(nil), d.order...) }

// Levels returns the nodes grouped so that each level depends only on
// earlier levels; nodes in one level may start in parallel.
func (d *DAG) Levels() [][]string {
	out := make([][]string, len(d.levels))
	for i, l := range d.levels {
		out[i] = append([]string(nil), l...)
	}
	return out
}

// StopOrder returns the services in the order they stop: dependants first.
func (d *DAG) StopOrder() []string {
	out := make([]string, 0, len(d.order))
	for i := len(d.order) - 1; i >= 0; i-- {
		out = append(out, d.order[i])
	}
	return out
}

// Dependants returns the nodes that directly depend on name.
func (d *DAG) Dependants(name string) []string {
	return append([]string(nil), d.dependants[name]...)
}

// Downstream returns every node that transitively depends on name, in start order.
func (d *DAG) Downstream(name string) []string {
	reach := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		for _, dep := range d.dependants[n] {
			if !reach[dep] {
				reach[dep] = true
				walk(dep)
			}
		}
	}
	walk(name)
	var out []string
	for _, n := range d.order {
		if reach[n] {
			out = append(out, n)
		}
	}
	return out
}

// CriticalPath returns the longest chain of dependencies ending at any node,
// measured in nodes; used to size start timeouts.
func (d *DAG) CriticalPath() []string {
	best := map[string][]string{}
	for _, n := range d.order {
		deps := make([]string, 0, len(d.nodes[n].Deps))
		for dep := range d.nodes[n].Deps {
			deps = append(deps, dep)
		}
		sort.Strings(deps)
		var longest []string
		for _, dep := range deps {
			if p := best[dep]; len(p) > len(longest) {
				longest = p
			}
		}
		best[n] = append(append([]string(nil), longest...), n)
	}
	var out []string
	for _, n := range d.order {
		if len(best[n]) > len(out) {
			out = best[n]
		}
	}
	return out
}
