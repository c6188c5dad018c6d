package demo

import (
	"context"
	_ "embed"
	"net/http"
	"net/http/httputil"
	"net/url"
)

//go:embed web/index.html
var indexHTML []byte

// runWeb is the "web" role: it serves a small page that fetches
// /api/hello and the notes, and forwards /api/* to API_URL itself so the
// page also works when reached directly on its published port, before the
// embedded proxy routes /api/* to the api service.
//
// Environment: PORT (3000), API_URL (http://api:8080), READY_MARKER
// (/tmp/web-ready), READY_FILE (/tmp/ready); both markers are touched
// once listening.
func runWeb(ctx context.Context, env *roleEnv, _ []string) error {
	apiURL, err := baseURL(env, "API_URL", "http://api:8080")
	if err != nil {
		return err
	}
	target, _ := url.Parse(apiURL) // validated by baseURL
	marker := env.str("READY_MARKER", "/tmp/web-ready")
	readyFile := env.readyFile()
	if err := removeMarkers(marker, readyFile); err != nil {
		return err
	}

	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = peerClient(0).Transport
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "api unreachable: " + err.Error()})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("/api/", proxy)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(indexHTML)
	})

	srv, err := startServer(env, ":"+env.str("PORT", "3000"), mux)
	if err != nil {
		return err
	}
	for _, m := range []string{marker, readyFile} {
		if err := touch(m); err != nil {
			_ = srv.srv.Close()
			return err
		}
	}
	return srv.wait(ctx)
}
