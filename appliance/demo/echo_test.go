package demo

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestEchoHandler(t *testing.T) {
	srv := httptest.NewServer(echoHandler("convex", 3210))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/1k")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 1024 || resp.Header.Get("Content-Length") != "1024" {
		t.Fatalf("/1k: %d bytes, Content-Length %q", len(b), resp.Header.Get("Content-Length"))
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/x", nil)
	req.Header.Set("X-Api-Version", "2")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Name, Method, Path string
		Port               int
		Headers            map[string]string
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Name != "convex" || got.Port != 3210 || got.Method != "POST" || got.Path != "/api/x" || got.Headers["X-Api-Version"] != "2" {
		t.Fatalf("echo = %+v", got)
	}

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "/echo ping" {
		t.Fatalf("websocket echo = %q, %v", msg, err)
	}
}

func TestEchoRejectsBadPorts(t *testing.T) {
	env := &roleEnv{lookup: func(k string) (string, bool) {
		if k == "PORTS" {
			return "8080,x", true
		}
		return "", false
	}}
	err := runRole(context.Background(), "echo", nil, env)
	if err == nil || !strings.Contains(err.Error(), `invalid PORTS entry "x"`) {
		t.Fatalf("err = %v", err)
	}
}
