package main

import (
	"reflect"
	"testing"
	"time"
)

func TestLoadBenchCompose(t *testing.T) {
	app, err := loadCompose("compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := app.Order, []string{"db", "front", "convex", "crawler", "rag", "platform"}; !reflect.DeepEqual(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	if got, want := app.Services["platform"].Deps, []string{"convex", "crawler", "rag"}; !reflect.DeepEqual(got, want) {
		t.Errorf("platform deps = %v, want %v", got, want)
	}
	db := app.Services["db"]
	if db.Probe[0] != "/outpost" || db.Image != "localhost/outpost-bench:latest" || !reflect.DeepEqual(db.Command, []string{"store"}) {
		t.Errorf("db = %+v", db)
	}
	if got := app.longestChain(); len(got) != 4 || got[0] != "db" || got[3] != "platform" {
		t.Errorf("longest chain = %v", got)
	}
	s := time.Second
	w := map[string]time.Duration{"db": 2 * s, "front": 8 * s, "convex": 3 * s, "crawler": 2 * s, "rag": 1 * s, "platform": 2 * s}
	path, sum := app.criticalPath(w)
	if want := []string{"db", "convex", "crawler", "platform"}; !reflect.DeepEqual(path, want) || sum != 9*s {
		t.Errorf("critical path = %v %s, want %v 9s", path, sum, want)
	}
	w["front"] = 10 * s
	if path, sum := app.criticalPath(w); !reflect.DeepEqual(path, []string{"front"}) || sum != 10*s {
		t.Errorf("critical path = %v %s, want [front] 10s", path, sum)
	}
	w["front"], w["rag"] = s, 5*s
	if path, _ := app.criticalPath(w); !reflect.DeepEqual(path, []string{"db", "convex", "rag", "platform"}) {
		t.Errorf("critical path = %v, want via rag", path)
	}
}
