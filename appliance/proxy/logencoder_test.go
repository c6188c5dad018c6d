package proxy

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// countingObject counts how often it is marshalled.
type countingObject struct{ n *int }

func (o countingObject) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	*o.n++
	enc.AddString("method", "GET")
	enc.AddString("uri", "/1k")
	return nil
}

type sliceWriter struct{ lines [][]byte }

func (w *sliceWriter) Write(p []byte) (int, error) {
	w.lines = append(w.lines, append([]byte(nil), p...))
	return len(p), nil
}

func (*sliceWriter) Sync() error { return nil }

// TestLazyEncoder checks that a field attached with With is not marshalled
// for entries below the level, and that written entries carry the same
// fields as with Caddy's JSON encoder.
func TestLazyEncoder(t *testing.T) {
	lazy := &lazyEncoder{}
	plain := &logging.JSONEncoder{}
	for _, p := range []caddy.Provisioner{lazy, plain} {
		if err := p.Provision(caddy.Context{}); err != nil {
			t.Fatal(err)
		}
	}
	var lazyOut, plainOut sliceWriter
	lazyLog := zap.New(zapcore.NewCore(lazy, &lazyOut, zapcore.InfoLevel))
	plainLog := zap.New(zapcore.NewCore(plain, &plainOut, zapcore.InfoLevel))

	var marshalled int
	obj := countingObject{&marshalled}
	for range 100 {
		l := lazyLog.With(zap.String("upstream", "127.0.0.1:8080"), zap.Object("request", obj))
		if c := l.Check(zapcore.DebugLevel, "upstream roundtrip"); c != nil {
			c.Write()
		}
	}
	if marshalled != 0 {
		t.Fatalf("the request was marshalled %d times for 100 debug entries below the level; want 0", marshalled)
	}

	entry := func(l *zap.Logger) {
		l.With(zap.Object("request", obj), zap.Strings("tags", []string{"a", "b"})).
			With(zap.Duration("duration", time.Second)).
			Warn("upstream slow", zap.Int("status", 200))
	}
	entry(lazyLog)
	entry(plainLog)
	if marshalled != 2 {
		t.Errorf("marshalled %d times for two written entries; want 2", marshalled)
	}
	if len(lazyOut.lines) != 1 || len(plainOut.lines) != 1 {
		t.Fatalf("entries written: lazy %d, json %d; want 1 each", len(lazyOut.lines), len(plainOut.lines))
	}
	var got, want map[string]any
	if err := json.Unmarshal(lazyOut.lines[0], &got); err != nil {
		t.Fatalf("lazy encoder wrote invalid JSON %q: %v", lazyOut.lines[0], err)
	}
	if err := json.Unmarshal(plainOut.lines[0], &want); err != nil {
		t.Fatal(err)
	}
	delete(got, "ts")
	delete(want, "ts")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lazy encoder wrote\n%s\nthe JSON encoder\n%s", lazyOut.lines[0], plainOut.lines[0])
	}

	// Clones keep their deferred fields apart.
	base := lazyLog.With(zap.Object("request", obj))
	a := base.With(zap.Object("a", obj))
	b := base.With(zap.Object("b", obj))
	lazyOut.lines = nil
	a.Warn("x")
	b.Warn("y")
	var ea, eb map[string]any
	_ = json.Unmarshal(lazyOut.lines[0], &ea)
	_ = json.Unmarshal(lazyOut.lines[1], &eb)
	if _, ok := ea["b"]; ok {
		t.Errorf("entry of clone a carries b's field: %s", lazyOut.lines[0])
	}
	if _, ok := eb["a"]; ok || eb["b"] == nil || eb["request"] == nil {
		t.Errorf("entry of clone b: %s", lazyOut.lines[1])
	}
}
