package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// storeHealthTimeout bounds the API's probe of the store's /health.
const storeHealthTimeout = time.Second

// storeCallTimeout bounds the API's other calls into the store.
const storeCallTimeout = 3 * time.Second

// maxNoteBytes bounds one note.
const maxNoteBytes = 64 << 10

// runAPI is the "api" role: a stateless HTTP API in front of the store.
//
// Environment: PORT (8080), STORE_URL (http://store:7000), GREETING,
// READY_MARKER (/tmp/api-ready), READY_FILE (/tmp/ready).
//
// GET /health answers 200 only while the store's /health answers 200
// within 1s. The markers are touched after the first successful contact
// with the store.
func runAPI(ctx context.Context, env *roleEnv, _ []string) error {
	storeURL, err := baseURL(env, "STORE_URL", "http://store:7000")
	if err != nil {
		return err
	}
	marker := env.str("READY_MARKER", "/tmp/api-ready")
	readyFile := env.readyFile()
	if err := removeMarkers(marker, readyFile); err != nil {
		return err
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("reading hostname: %w", err)
	}
	a := &apiServer{
		storeURL: storeURL,
		hostname: host,
		greeting: env.str("GREETING", "Hello from the Outpost demo"),
		client:   peerClient(storeCallTimeout),
	}
	srv, err := startServer(env, ":"+env.str("PORT", "8080"), a.handler())
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if err := a.awaitStore(ctx, time.Second); err != nil {
			return // cancelled
		}
		for _, m := range []string{marker, readyFile} {
			if err := touch(m); err != nil {
				cancel(err)
				return
			}
		}
		env.log.Info("store reachable, api ready", "store_url", storeURL)
	}()

	err = srv.wait(ctx)
	cancel(nil)
	<-watchDone
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// baseURL reads an http(s) base URL from the environment, without a
// trailing slash.
func baseURL(env *roleEnv, key, def string) (string, error) {
	raw := strings.TrimRight(env.str(key, def), "/")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid %s=%q: want an http URL such as %s", key, raw, def)
	}
	return raw, nil
}

// apiServer is the api role's state.
type apiServer struct {
	storeURL string
	hostname string
	greeting string
	client   *http.Client
	seq      atomic.Uint64
}

// awaitStore polls the store's health every interval until it answers 200.
func (a *apiServer) awaitStore(ctx context.Context, interval time.Duration) error {
	for {
		if a.storeHealthy(ctx) == nil {
			return nil
		}
		if err := sleepCtx(ctx, interval); err != nil {
			return err
		}
	}
}

// storeHealthy returns nil when the store's /health answers 200 in time.
func (a *apiServer) storeHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, storeHealthTimeout)
	defer cancel()
	_, err := a.storeCall(ctx, http.MethodGet, "/health", nil, http.StatusOK)
	return err
}

// storeCall does one request to the store and returns the body when the
// status is one of want.
func (a *apiServer) storeCall(ctx context.Context, method, path string, body io.Reader, want ...int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.storeURL+path, body)
	if err != nil {
		return nil, fmt.Errorf("building store request: %w", err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling store: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxValueBytes+1<<10))
	if err != nil {
		return nil, fmt.Errorf("reading store response: %w", err)
	}
	for _, s := range want {
		if resp.StatusCode == s {
			return b, nil
		}
	}
	return nil, fmt.Errorf("store answered %s to %s %s", resp.Status, method, path)
}

// note is one note as the API returns it.
type note struct {
	Key  string `json:"key"`
	Text string `json:"text"`
}

// handler serves:
//
//	GET  /health      200 while the store is healthy, else 503
//	GET  /api/hello   greeting, hostname, time and the store's /stats
//	GET  /api/notes   all notes, oldest first
//	POST /api/notes   adds a note: {"text":"..."} or a plain-text body
func (a *apiServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if err := a.storeHealthy(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "store unavailable", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /api/hello", func(w http.ResponseWriter, r *http.Request) {
		b, err := a.storeCall(r.Context(), http.MethodGet, "/stats", nil, http.StatusOK)
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		var stats storeStats
		if err := json.Unmarshal(b, &stats); err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "decoding store stats: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"message":  a.greeting,
			"service":  "api",
			"hostname": a.hostname,
			"time":     time.Now().UTC().Format(time.RFC3339),
			"store":    stats,
		})
	})
	mux.HandleFunc("GET /api/notes", func(w http.ResponseWriter, r *http.Request) {
		b, err := a.storeCall(r.Context(), http.MethodGet, "/kv?prefix=note-", nil, http.StatusOK)
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		var kv map[string]string
		if err := json.Unmarshal(b, &kv); err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "decoding store keys: " + err.Error()})
			return
		}
		notes := make([]note, 0, len(kv))
		for _, k := range sortedKeys(kv) {
			notes = append(notes, note{Key: k, Text: kv[k]})
		}
		writeJSON(w, http.StatusOK, notes)
	})
	mux.HandleFunc("POST /api/notes", func(w http.ResponseWriter, r *http.Request) {
		text, err := readNote(w, r)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		// Keys sort by creation time; hostname and a sequence keep two
		// API copies (rotation) from colliding.
		key := fmt.Sprintf("note-%019d-%s-%d", time.Now().UnixNano(), url.PathEscape(a.hostname), a.seq.Add(1))
		if _, err := a.storeCall(r.Context(), http.MethodPut, "/kv/"+key, strings.NewReader(text), http.StatusNoContent, http.StatusOK); err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusCreated, note{Key: key, Text: text})
	})
	return mux
}

// readNote reads a note's text from a JSON {"text":...} or plain body.
func readNote(w http.ResponseWriter, r *http.Request) (string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNoteBytes))
	if err != nil {
		return "", fmt.Errorf("reading note: %w", err)
	}
	text := string(body)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		var in struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			return "", fmt.Errorf("decoding note: %w", err)
		}
		text = in.Text
	}
	text = strings.TrimSpace(text)
	if text == "" {
		return "", errors.New("empty note: send {\"text\":\"...\"} or a plain-text body")
	}
	return text, nil
}
