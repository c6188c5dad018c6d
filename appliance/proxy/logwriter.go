package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(logWriter{})
}

// logWriterName is the "output" of Caddy's log writer module that sends
// Caddy's logs into Outpost's slog stream.
const logWriterName = "outpost"

// caddyLog is the logger Caddy's entries go to; set by Proxy.Apply and
// EnsureCA. Caddy's logging is process-global, like the rest of Caddy.
var caddyLog atomic.Pointer[slog.Logger]

func init() {
	caddyLog.Store(slog.New(slog.DiscardHandler))
}

// logWriter is the Caddy log writer module caddy.logging.writers.outpost.
// Caddy encodes each entry as one JSON object (the json encoder is
// configured with it); the writer decodes it and logs it again through
// slog with the same level, message and fields, under component=caddy, so
// Caddy's logs and Outpost's are one stream on stderr (journald collects
// it).
type logWriter struct{}

// CaddyModule returns the Caddy module information.
func (logWriter) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.writers." + logWriterName,
		New: func() caddy.Module { return new(logWriter) },
	}
}

// String names the writer in Caddy's messages.
func (logWriter) String() string { return "outpost slog" }

// WriterKey identifies the writer among Caddy's open writers.
func (logWriter) WriterKey() string { return "outpost_slog" }

// OpenWriter returns the writer Caddy writes encoded entries to.
func (logWriter) OpenWriter() (io.WriteCloser, error) { return slogWriter{}, nil }

var _ caddy.WriterOpener = logWriter{}

// slogWriter turns Caddy's JSON log lines into slog records.
type slogWriter struct{}

// Close does nothing: the slog stream outlives Caddy's configs.
func (slogWriter) Close() error { return nil }

// Write logs each JSON line of p (zap writes one entry per call).
func (slogWriter) Write(p []byte) (int, error) {
	l := caddyLog.Load()
	for _, line := range bytes.Split(p, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) > 0 {
			logLine(l, line)
		}
	}
	return len(p), nil
}

// logLine logs one zap JSON entry: level, msg and logger become the
// record's level, message and "logger"; ts is dropped (slog stamps its
// own); every other field is kept, sorted by name.
func logLine(l *slog.Logger, line []byte) {
	var e map[string]any
	if err := json.Unmarshal(line, &e); err != nil {
		l.Info("caddy", "component", "caddy", "line", string(line))
		return
	}
	level := slog.LevelInfo
	if s, ok := e["level"].(string); ok {
		switch strings.ToLower(s) {
		case "debug":
			level = slog.LevelDebug
		case "warn", "warning":
			level = slog.LevelWarn
		case "error", "dpanic", "panic", "fatal":
			level = slog.LevelError
		}
	}
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	msg, _ := e["msg"].(string)
	attrs := []slog.Attr{slog.String("component", "caddy")}
	if name, ok := e["logger"].(string); ok && name != "" {
		attrs = append(attrs, slog.String("logger", name))
	}
	keys := make([]string, 0, len(e))
	for k := range e {
		switch k {
		case "level", "ts", "msg", "logger":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, e[k]))
	}
	l.LogAttrs(ctx, level, msg, attrs...)
}
