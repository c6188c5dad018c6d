package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	maxD, p99, p50 := percentiles(d)
	if maxD != 100*time.Millisecond || p99 != 99*time.Millisecond || p50 != 50*time.Millisecond {
		t.Fatalf("max %s p99 %s p50 %s", maxD, p99, p50)
	}
	if d[0] != 100*time.Millisecond {
		t.Fatal("percentiles sorted its input")
	}
}

// The loader classifies every answer: the old and new version, a wrong
// version, a non-2xx status, a refused connection.
func TestLoaderClassifies(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			fmt.Fprint(w, `{"name":"v1","path":"/version"}`)
		case 2:
			fmt.Fprint(w, `{"name":"v3"}`)
		case 3:
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
		case 4:
			fmt.Fprint(w, `<html>`)
		default:
			fmt.Fprint(w, `{"name":"v2"}`)
		}
	}))
	l := newLoader(srv.URL, "GET", 1, 1, "v1", "v2")
	want := []outcome{okFrom, badBody, badCode, badBody, okTo}
	for i, w := range want {
		s := l.do(time.Now())
		if s.outcome != w {
			t.Fatalf("request %d: outcome %d (%s), want %d", i+1, s.outcome, s.detail, w)
		}
		l.record(s)
	}
	srv.Close()
	if s := l.do(time.Now()); s.outcome != connErr {
		t.Fatalf("closed server: outcome %d, want a connection error", s.outcome)
	}
	st := l.stats(time.Now().Add(-time.Minute), time.Second)
	if st.total != 5 || st.failed() != 3 || st.byKind[badCode] != 1 || st.byKind[badBody] != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// A constant-rate run sends about rate × duration requests, and
// settledSince only holds once the new version alone answered.
func TestLoaderRun(t *testing.T) {
	var version atomic.Value
	version.Store("v1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"name":%q}`, version.Load())
	}))
	defer srv.Close()
	l := newLoader(srv.URL, "POST", 100, 4, "v1", "v2")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx); close(done) }()
	time.Sleep(300 * time.Millisecond)
	if l.settledSince(time.Now().Add(-200 * time.Millisecond)) {
		t.Fatal("settled while v1 answers")
	}
	version.Store("v2")
	time.Sleep(300 * time.Millisecond)
	mark := time.Now()
	time.Sleep(300 * time.Millisecond)
	if !l.settledSince(mark) {
		t.Fatal("not settled after v2 answered alone")
	}
	cancel()
	<-done
	st := l.stats(mark, 0)
	if st.failed() != 0 || st.total < 60 || st.total > 100 {
		t.Fatalf("%d requests, %d failed in 0.9s at 100/s", st.total, st.failed())
	}
}
