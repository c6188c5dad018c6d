package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// storeFile is the store's whole state inside $DATA_DIR.
const storeFile = "store.json"

// maxValueBytes bounds one stored value.
const maxValueBytes = 1 << 20

// runStore is the "store" role: a stateful key-value store, shaped like a
// Tale service with one-shot initialisation and a ready marker.
//
// Environment: PORT (7000), DATA_DIR (/data), INIT_DELAY (2s),
// READY_MARKER (/tmp/store-ready), READY_FILE (/tmp/ready).
//
// It removes stale markers, starts serving (GET /health answers 503 until
// initialised), then sleeps INIT_DELAY, creates DATA_DIR/store.json if
// absent, increments the boot counter persisted there, and only then
// touches the markers.
func runStore(ctx context.Context, env *roleEnv, _ []string) error {
	delay, err := env.duration("INIT_DELAY", 2*time.Second)
	if err != nil {
		return err
	}
	marker := env.str("READY_MARKER", "/tmp/store-ready")
	readyFile := env.readyFile()
	if err := removeMarkers(marker, readyFile); err != nil {
		return err
	}
	st := &kvStore{dir: env.str("DATA_DIR", "/data")}
	srv, err := startServer(env, ":"+env.str("PORT", "7000"), st.handler())
	if err != nil {
		return err
	}

	// An init failure cancels the server and becomes the role's error.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	initDone := make(chan struct{})
	go func() {
		defer close(initDone)
		if err := st.boot(ctx, delay); err != nil {
			if ctx.Err() == nil {
				cancel(err)
			}
			return
		}
		for _, m := range []string{marker, readyFile} {
			if err := touch(m); err != nil {
				cancel(err)
				return
			}
		}
		env.log.Info("store initialised", "data_dir", st.dir, "boots", st.stats().Boots)
	}()

	err = srv.wait(ctx)
	cancel(nil) // a no-op unless serving failed while init still runs
	<-initDone
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// storeState is the content of store.json.
type storeState struct {
	Boots int               `json:"boots"`
	Data  map[string]string `json:"data"`
}

// storeStats is what GET /stats returns.
type storeStats struct {
	Boots int `json:"boots"`
	Keys  int `json:"keys"`
}

// kvStore keeps the whole state in memory and rewrites store.json
// (atomically, fsynced) on every change: the demo's data is tiny.
type kvStore struct {
	dir   string
	ready atomic.Bool

	mu    sync.Mutex
	state storeState
}

// boot is the one-shot initialisation.
func (s *kvStore) boot(ctx context.Context, delay time.Duration) error {
	if err := sleepCtx(ctx, delay); err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	state := storeState{Data: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(s.dir, storeFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("reading store: %w", err)
	default:
		if err := json.Unmarshal(b, &state); err != nil {
			return fmt.Errorf("parsing %s: %w", filepath.Join(s.dir, storeFile), err)
		}
		if state.Data == nil {
			state.Data = map[string]string{}
		}
	}
	state.Boots++
	if err := s.persist(state); err != nil {
		return err
	}
	s.state = state
	s.ready.Store(true)
	return nil
}

// persist writes state to store.json through a temporary file, fsyncing
// the file and the directory so a crash leaves the old or the new state.
// The caller holds s.mu.
func (s *kvStore) persist(state storeState) error {
	b, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding store: %w", err)
	}
	path := filepath.Join(s.dir, storeFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing store: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing store: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing store: %w", err)
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("syncing data dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing data dir: %w", err)
	}
	return nil
}

func (s *kvStore) stats() storeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return storeStats{Boots: s.state.Boots, Keys: len(s.state.Data)}
}

// handler serves:
//
//	GET /health          200 once initialised, 503 before
//	GET /stats           {"boots":N,"keys":N}
//	GET /kv?prefix=P     {"key":"value",...} for keys starting with P
//	GET /kv/{key}        the value (text/plain), 404 when absent
//	PUT /kv/{key}        stores the body (at most 1 MiB), 204
func (s *kvStore) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "initialising"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /stats", s.whenReady(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.stats())
	}))
	mux.Handle("GET /kv", s.whenReady(func(w http.ResponseWriter, r *http.Request) {
		prefix := r.URL.Query().Get("prefix")
		out := map[string]string{}
		s.mu.Lock()
		for k, v := range s.state.Data {
			if strings.HasPrefix(k, prefix) {
				out[k] = v
			}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, out)
	}))
	mux.Handle("GET /kv/{key}", s.whenReady(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		v, ok := s.state.Data[r.PathValue("key")]
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such key"})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, v)
	}))
	mux.Handle("PUT /kv/{key}", s.whenReady(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxValueBytes))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": err.Error()})
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		next := storeState{Boots: s.state.Boots, Data: make(map[string]string, len(s.state.Data)+1)}
		for k, v := range s.state.Data {
			next.Data[k] = v
		}
		next.Data[r.PathValue("key")] = string(body)
		if err := s.persist(next); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		s.state = next
		w.WriteHeader(http.StatusNoContent)
	}))
	return mux
}

// whenReady answers 503 until the store is initialised.
func (s *kvStore) whenReady(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "store is initialising"})
			return
		}
		h(w, r)
	})
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// sortedKeys returns m's keys sorted.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
