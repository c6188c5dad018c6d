package demo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/websocket"
)

func init() {
	roles["echo"] = runEcho
}

// echoBody is the 1 KiB response of the echo role's /1k (the proxy
// benchmark's payload).
var echoBody = []byte(strings.Repeat("outpost-proxy-benchmark-payload\n", 32))

// runEcho is the "echo" role: a backend for proxy tests and benchmarks. It
// listens on every port of $PORTS (comma-separated, default 8080) and
// answers:
//
//	GET /health        200 {"status":"ok"}
//	/1k                1024 bytes of text/plain
//	WebSocket upgrade  echoes each message, prefixed by the request path
//	                   it saw and a space ("/echo ping")
//	anything else      200 JSON: $NAME, the port, method, path, host and
//	                   the request headers
//
// $READY_MARKER (when set) and $READY_FILE are touched once every port
// listens.
func runEcho(ctx context.Context, env *roleEnv, _ []string) error {
	var ports []int
	for _, f := range strings.Split(env.str("PORTS", "8080"), ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("invalid PORTS entry %q: want a comma-separated list of ports", f)
		}
		ports = append(ports, p)
	}
	name := env.str("NAME", "echo")
	marker, readyFile := env.optional("READY_MARKER", ""), env.readyFile()
	if err := removeMarkers(marker, readyFile); err != nil {
		return err
	}
	var servers []*server
	defer func() {
		for _, s := range servers {
			_ = s.srv.Close()
		}
	}()
	for _, port := range ports {
		s, err := startServer(env, ":"+strconv.Itoa(port), echoHandler(name, port))
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	for _, m := range []string{marker, readyFile} {
		if err := touch(m); err != nil {
			return err
		}
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errc <- s.wait(ctx) }()
	}
	var errs []error
	for range servers {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

func echoHandler(name string, port int) http.Handler {
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/1k", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(echoBody)))
		_, _ = w.Write(echoBody)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			c, err := upgrader.Upgrade(w, r, nil)
			if err != nil {
				return // the upgrader answered the client
			}
			defer c.Close()
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				if err := c.WriteMessage(mt, append([]byte(r.URL.Path+" "), msg...)); err != nil {
					return
				}
			}
		}
		headers := map[string]string{}
		for k := range r.Header {
			headers[k] = r.Header.Get(k)
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"name": name, "port": port, "method": r.Method, "path": r.URL.Path, "host": r.Host, "headers": headers,
		})
	})
	return mux
}
