package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
)

// The control API is HTTP/1.1 over the Unix socket in the runtime directory
// (mode 0600: only the appliance's user may drive it).
//
//	GET  /v1/status          → StatusReply
//	GET  /v1/events?since=ID → []store.Event
//	POST /v1/up   UpRequest  → NDJSON stream of StreamLine, last one has Result or Error
//	POST /v1/down            → NDJSON stream of StreamLine
//	GET  /v1/proxy           → proxy.Status (the effective route table)

// StatusReply is the answer to GET /v1/status.
type StatusReply struct {
	Appliance string                 `json:"appliance"`
	Version   string                 `json:"version,omitempty"`
	Revision  int64                  `json:"revision"`
	Daemon    bool                   `json:"daemon"`
	PID       int                    `json:"pid,omitempty"`
	Since     time.Time              `json:"since,omitzero"`
	Services  []runtime.ServiceState `json:"services"`
}

// UpRequest is the body of POST /v1/up.
type UpRequest struct {
	Appliance *model.Appliance `json:"appliance"`
	Timeout   time.Duration    `json:"timeout"`
}

// StreamLine is one line of a streamed operation.
type StreamLine struct {
	Service string            `json:"service,omitempty"`
	Message string            `json:"message,omitempty"`
	Result  *runtime.UpResult `json:"result,omitempty"`
	Error   string            `json:"error,omitempty"`
}

func (d *Daemon) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("GET /v1/events", d.handleEvents)
	mux.HandleFunc("POST /v1/up", d.handleUp)
	mux.HandleFunc("POST /v1/down", d.handleDown)
	mux.HandleFunc("GET /v1/proxy", d.handleProxy)
	d.backupRoutes(mux)  // POST /v1/backup, /v1/restore (backup.go)
	d.upgradeRoutes(mux) // POST /v1/upgrade, /v1/rollback (upgrade.go)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	app := d.current()
	if app == nil {
		writeJSON(w, http.StatusOK, StatusReply{Daemon: true, PID: os.Getpid(), Since: d.started})
		return
	}
	states, err := d.env.Runtime.Status(r.Context(), app)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	rep := StatusReply{Appliance: app.Name, Version: app.Version, Daemon: true, PID: os.Getpid(), Since: d.started, Services: states}
	if rev, err := d.env.Store.ActiveRevision(r.Context(), app.Name); err == nil {
		rep.Revision = rev.ID
	}
	writeJSON(w, http.StatusOK, rep)
}

func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	app := d.current()
	if app == nil {
		writeJSON(w, http.StatusOK, []store.Event{})
		return
	}
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	evs, err := d.env.Store.Events(r.Context(), app.Name, since, 1000)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

// streamer writes NDJSON lines and flushes each.
type streamer struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (s *streamer) send(l StreamLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = json.NewEncoder(s.w).Encode(l)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (d *Daemon) handleUp(w http.ResponseWriter, r *http.Request) {
	var req UpRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Appliance == nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("decoding up request: %v", err)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	s := &streamer{w: w}
	// The operation must not die with the client: a disconnected CLI would
	// otherwise leave a half-started appliance.
	ctx := context.WithoutCancel(r.Context())
	res, err := d.apply(ctx, req.Appliance, runtime.UpOptions{Timeout: req.Timeout, Progress: func(svc, msg string) {
		s.send(StreamLine{Service: svc, Message: msg})
	}})
	if err != nil {
		s.send(StreamLine{Error: err.Error()})
		return
	}
	s.send(StreamLine{Result: res})
}

func (d *Daemon) handleDown(w http.ResponseWriter, r *http.Request) {
	app := d.current()
	w.Header().Set("Content-Type", "application/x-ndjson")
	s := &streamer{w: w}
	if app == nil {
		s.send(StreamLine{Error: ErrNoAppliance.Error()})
		return
	}
	err := d.down(context.WithoutCancel(r.Context()), app, runtime.StopOptions{Progress: func(svc, msg string) {
		s.send(StreamLine{Service: svc, Message: msg})
	}})
	if err != nil {
		s.send(StreamLine{Error: err.Error()})
		return
	}
	s.send(StreamLine{Message: "down"})
}

// Client talks to a running daemon's control API.
type Client struct {
	http *http.Client
}

// ErrNoDaemon means no daemon answers on the control socket.
var ErrNoDaemon = errors.New("no outpost daemon is running")

// Dial connects to the daemon behind the socket, or returns ErrNoDaemon.
func Dial(socket string) (*Client, error) {
	c, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil, ErrNoDaemon
	}
	c.Close()
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		},
	}}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://outpost"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling the outpost daemon: %w", err)
	}
	return resp, nil
}

// Status returns the daemon's view of the appliance.
func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/status", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var rep StatusReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return nil, fmt.Errorf("decoding daemon status: %w", err)
	}
	return &rep, nil
}

// Events returns events after the given ID.
func (c *Client) Events(ctx context.Context, since int64) ([]store.Event, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/events?since="+strconv.FormatInt(since, 10), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var evs []store.Event
	if err := json.NewDecoder(resp.Body).Decode(&evs); err != nil {
		return nil, fmt.Errorf("decoding daemon events: %w", err)
	}
	return evs, nil
}

// Up asks the daemon to apply app and streams its progress.
func (c *Client) Up(ctx context.Context, app *model.Appliance, timeout time.Duration, progress runtime.ProgressFunc) (*runtime.UpResult, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v1/up", UpRequest{Appliance: app, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res *runtime.UpResult
	err = readStream(resp.Body, progress, func(l StreamLine) { res = l.Result })
	return res, err
}

// Down asks the daemon to take the appliance down.
func (c *Client) Down(ctx context.Context, progress runtime.ProgressFunc) error {
	resp, err := c.do(ctx, http.MethodPost, "/v1/down", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readStream(resp.Body, progress, func(StreamLine) {})
}

func readStream(r io.Reader, progress runtime.ProgressFunc, last func(StreamLine)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var l StreamLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("decoding daemon reply: %w (%s)", err, sc.Text())
		}
		switch {
		case l.Error != "":
			return errors.New(l.Error)
		case l.Result != nil:
			last(l)
		case progress != nil && l.Service != "":
			progress(l.Service, l.Message)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading daemon reply: %w", err)
	}
	return nil
}
