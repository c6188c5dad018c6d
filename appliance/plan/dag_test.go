package plan

import (
	"errors"
	"reflect"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
)

func dep(c model.Condition) model.Dependency { return model.Dependency{Condition: c, Required: true} }

// tale is the Tale-shaped graph: db → convex → {crawler, rag} → platform.
func tale() *model.Appliance {
	h := dep(model.ConditionHealthy)
	return &model.Appliance{Name: "tale", Services: map[string]*model.Service{
		"db":       {Name: "db"},
		"convex":   {Name: "convex", DependsOn: map[string]model.Dependency{"db": h}},
		"crawler":  {Name: "crawler", DependsOn: map[string]model.Dependency{"convex": h}},
		"rag":      {Name: "rag", DependsOn: map[string]model.Dependency{"db": h, "convex": h}},
		"platform": {Name: "platform", DependsOn: map[string]model.Dependency{"convex": h, "rag": h, "crawler": h}},
		"front":    {Name: "front"},
	}}
}

func TestLevelsTale(t *testing.T) {
	d, err := Graph(tale(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"db", "front"}, {"convex"}, {"crawler", "rag"}, {"platform"}}
	if got := d.Levels(); !reflect.DeepEqual(got, want) {
		t.Fatalf("levels = %v, want %v", got, want)
	}
	if got, want := d.StopOrder()[0], "platform"; got != want {
		t.Fatalf("first to stop = %s, want %s", got, want)
	}
	if got, want := d.Downstream("convex"), []string{"crawler", "rag", "platform"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("downstream(convex) = %v, want %v", got, want)
	}
	if got, want := d.CriticalPath(), []string{"db", "convex", "crawler", "platform"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("critical path = %v, want %v", got, want)
	}
}

func TestJobsJoinTheGraph(t *testing.T) {
	a := &model.Appliance{Name: "aleph", Services: map[string]*model.Service{
		"postgres": {Name: "postgres"},
		"es":       {Name: "es"},
		"api":      {Name: "api"},
		"worker":   {Name: "worker", DependsOn: map[string]model.Dependency{"api": dep(model.ConditionStarted)}},
	}, Jobs: []*model.Job{{Name: "upgrade", Service: "api", After: []string{"postgres", "es"}, Before: []string{"api"}}}}
	d, err := Graph(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{{"es", "postgres"}, {"upgrade"}, {"api"}, {"worker"}}
	if got := d.Levels(); !reflect.DeepEqual(got, want) {
		t.Fatalf("levels = %v, want %v", got, want)
	}
	if c := d.Node("api").Deps["upgrade"].Condition; c != model.ConditionCompleted {
		t.Fatalf("api waits for job with %s, want %s", c, model.ConditionCompleted)
	}
	// Excluding the job removes its edges too.
	d, err = Graph(a, func(*model.Job) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.Levels()); got != 2 {
		t.Fatalf("levels without job = %v", d.Levels())
	}
}

func TestGraphErrors(t *testing.T) {
	h := dep(model.ConditionHealthy)
	cases := map[string]struct {
		app     *model.Appliance
		isCycle bool
		want    string
	}{
		"cycle": {app: &model.Appliance{Services: map[string]*model.Service{
			"a": {DependsOn: map[string]model.Dependency{"b": h}},
			"b": {DependsOn: map[string]model.Dependency{"c": h}},
			"c": {DependsOn: map[string]model.Dependency{"a": h}},
		}}, isCycle: true, want: "dependency cycle: a → b → c → a; break it by removing one depends_on entry"},
		"unknown": {app: &model.Appliance{Services: map[string]*model.Service{
			"a": {DependsOn: map[string]model.Dependency{"nope": h}},
		}}, want: `building start order: a depends on unknown service "nope"`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Graph(tc.app, nil)
			if err == nil {
				t.Fatal("no error")
			}
			var ce *CycleError
			if errors.As(err, &ce) != tc.isCycle {
				t.Fatalf("cycle error = %v, want %v (%v)", !tc.isCycle, tc.isCycle, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("error = %q, want %q", err, tc.want)
			}
		})
	}
}

func TestOptionalUnknownDependencyIsDropped(t *testing.T) {
	a := &model.Appliance{Services: map[string]*model.Service{
		"a": {DependsOn: map[string]model.Dependency{"gone": {Condition: model.ConditionStarted}}},
	}}
	d, err := Graph(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Node("a").Deps) != 0 {
		t.Fatal("optional missing dependency kept")
	}
}
