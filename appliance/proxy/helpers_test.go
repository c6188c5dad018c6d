package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func newTextLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// validateConfig provisions a built config as Caddy would, without
// listening, with its storage moved into a temporary directory.
func validateConfig(t *testing.T, raw []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["storage"] = map[string]any{"module": "file_system", "root": t.TempDir()}
	b, _ := json.Marshal(m)
	var cfg caddy.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("decoding as caddy.Config: %v", err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("caddy rejects the config: %v", err)
	}
}
