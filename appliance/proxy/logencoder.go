package proxy

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(lazyEncoder{})
}

// logEncoderName is the "format" of the log encoder Outpost configures for
// Caddy's default log.
const logEncoderName = "outpost_json"

// lazyEncoder is the Caddy log encoder module
// caddy.logging.encoders.outpost_json: Caddy's JSON encoder, except that
// object, array and reflected fields attached to a logger (zap's With) are
// marshalled only when an entry is actually written.
//
// Why: Caddy's reverse proxy attaches the whole upstream request to a
// logger after every round trip, for a debug entry that is written only on
// errors or at debug level. Zap's JSON encoder marshals such a field the
// moment it is attached, so every proxied request paid for encoding its
// method, URI and headers into a buffer nobody read: 5–6 % of the embedded
// proxy's CPU under load (pprof of `outpost run` behind wrk, 32
// connections). Deferring them makes that free; the entries that are
// written are byte-for-byte what the JSON encoder writes, fields in a
// different order.
//
// A deferred field is marshalled from the value it holds when the entry is
// written, as with zap's own WithLazy.
type lazyEncoder struct {
	logging.JSONEncoder
	// deferred are the fields whose marshalling waits for EncodeEntry.
	deferred []zapcore.Field
}

// CaddyModule returns the Caddy module information.
func (lazyEncoder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.logging.encoders." + logEncoderName,
		New: func() caddy.Module { return new(lazyEncoder) },
	}
}

// Provision sets up the JSON encoder underneath.
func (e *lazyEncoder) Provision(ctx caddy.Context) error {
	return e.JSONEncoder.Provision(ctx)
}

// AddObject defers marshalling m until an entry is written.
func (e *lazyEncoder) AddObject(key string, m zapcore.ObjectMarshaler) error {
	e.deferred = append(e.deferred, zap.Object(key, m))
	return nil
}

// AddArray defers marshalling m until an entry is written.
func (e *lazyEncoder) AddArray(key string, m zapcore.ArrayMarshaler) error {
	e.deferred = append(e.deferred, zap.Array(key, m))
	return nil
}

// AddReflected defers encoding v until an entry is written.
func (e *lazyEncoder) AddReflected(key string, v any) error {
	e.deferred = append(e.deferred, zap.Reflect(key, v))
	return nil
}

// Clone copies the encoder; the copy's deferred fields are its own.
func (e *lazyEncoder) Clone() zapcore.Encoder {
	c := &lazyEncoder{deferred: slices.Clip(e.deferred)}
	c.LogEncoderConfig = e.LogEncoderConfig
	c.Encoder = e.Encoder.Clone()
	return c
}

// EncodeEntry writes the entry with the deferred fields marshalled now,
// before the entry's own fields.
func (e *lazyEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	if len(e.deferred) > 0 {
		fields = append(slices.Clip(e.deferred), fields...)
	}
	return e.Encoder.EncodeEntry(ent, fields)
}

var (
	_ zapcore.Encoder   = (*lazyEncoder)(nil)
	_ caddy.Provisioner = (*lazyEncoder)(nil)
)
