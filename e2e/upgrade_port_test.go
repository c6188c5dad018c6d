//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The embedded demo's web publishes a fixed host port and sits behind the
// embedded proxy. An upgrade that changes it rotates it anyway: the copy
// started beside gets only a loopback port of its own, the proxy moves to
// it, the service's own container (holding the fixed port) is replaced in
// place, the proxy moves back. Through the proxy no request fails; the
// plan says the fixed port is briefly unavailable, and it is.
func TestUpgradeFixedPortRotatesThroughDaemon(t *testing.T) {
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	name := "updemo" + uniq()
	p := ports(3)
	webPort, httpsPort, healthPort := p[0], p[1], p[2]
	v1 := demoDefinition(t,
		"name: outpost-demo", "name: "+name,
		"${OUTPOST_DEMO_WEB_PORT:-18000}", fmt.Sprint(webPort),
		"${OUTPOST_DEMO_HTTPS_PORT:-18443}", fmt.Sprint(httpsPort),
		"${OUTPOST_DEMO_PROXY_HEALTH_PORT:-2020}", fmt.Sprint(healthPort))
	webEnv := "      READY_MARKER: /tmp/web-ready\n"
	if strings.Count(v1, webEnv) != 1 || strings.Count(v1, fmt.Sprint(webPort)) != 1 {
		t.Fatalf("the demo definition changed shape; this test edits web's environment and port:\n%s", v1)
	}
	v2 := strings.Replace(v1, webEnv, webEnv+"      WEB_REVISION: \"2\"\n", 1)
	f1, f2 := h.write("v1.yml", v1), h.write("v2.yml", v2)
	cleanupAppliance(h, name)

	d := h.daemon("-f", f1)
	// An upgrade asked for while the daemon still starts the appliance
	// waits for that start, then runs (here: the plan of a dry run).
	eventually(t, time.Minute, "the daemon's control socket", func() error {
		if d.exited() {
			t.Fatalf("daemon exited:\n%s", h.logs())
		}
		_, err := os.Stat(filepath.Join(h.runtimeDir, "outpost.sock"))
		return err
	})
	r := h.must(5*time.Minute, "upgrade", "-f", f2, "--dry-run")
	if !strings.Contains(r.stderr, "the outpost daemon is still starting the appliance; waiting") {
		t.Errorf("a dry run sent during the daemon's start does not say it waits for it:\n%s", r.stderr)
	}
	gap := fmt.Sprintf("host port %d is unavailable for ~", webPort)
	for _, want := range []string{"rotate   web", gap, "while web is replaced; traffic through the proxy is not interrupted", "keep     api"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}

	var client *http.Client
	site := fmt.Sprintf("https://localhost:%d/", httpsPort)
	var index string
	eventually(t, 4*time.Minute, "the web front through the proxy", func() error {
		if d.exited() {
			t.Fatalf("daemon exited:\n%s", h.logs())
		}
		if client == nil {
			c, err := caClient(filepath.Join(h.stateDir, "proxy", "ca-root.crt"), httpsPort)
			if err != nil {
				return err
			}
			client = c
		}
		code, body, err := get(client, site)
		if err != nil || code != 200 || !strings.Contains(body, "<html") {
			return fmt.Errorf("%d %v %.200s", code, err, body)
		}
		index = body
		return nil
	})
	direct := fmt.Sprintf("http://127.0.0.1:%d/", webPort)
	if code, body, err := httpGet(direct); err != nil || code != 200 || body != index {
		t.Fatalf("the fixed port %d answers %d %v %.200s", webPort, code, err, body)
	}

	// Load through the proxy, and a probe of the fixed port, during the upgrade.
	var ok, failed, directOK, directFailed atomic.Int64
	var failures sync.Map
	var gapFirst, gapLast atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f()
			}
		}()
	}
	for range 4 {
		loop(func() {
			code, body, err := get(client, site)
			if err != nil || code != 200 || body != index {
				failed.Add(1)
				failures.Store(fmt.Sprintf("%d %v %.240s", code, err, strings.Join(strings.Fields(body), " ")), true)
				return
			}
			ok.Add(1)
		})
	}
	loop(func() {
		code, body, err := httpGet(direct)
		if err != nil || code != 200 || body != index {
			now := time.Now().UnixNano()
			gapFirst.CompareAndSwap(0, now)
			gapLast.Store(now)
			directFailed.Add(1)
			time.Sleep(20 * time.Millisecond)
			return
		}
		directOK.Add(1)
		time.Sleep(20 * time.Millisecond)
	})
	time.Sleep(time.Second)
	r = h.run(5*time.Minute, "upgrade", "-f", f2)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("upgrade exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"starting the new copy beside", "proxy switched to the new copy", "proxy back on the service's own container"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("upgrade progress lacks %q:\n%s", want, r.stderr)
		}
	}
	t.Logf("through the proxy during the upgrade: %d ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() > 0 {
		failures.Range(func(k, _ any) bool { t.Logf("failure: %s", k); return true })
		t.Errorf("%d requests failed through the proxy while web was upgraded", failed.Load())
	}
	if ok.Load() < 20 {
		t.Errorf("only %d requests went through the proxy during the upgrade", ok.Load())
	}
	// The fixed port had its gap, as the plan said (logged, not asserted:
	// how long depends on the machine).
	span := time.Duration(gapLast.Load() - gapFirst.Load())
	t.Logf("fixed port %d during the upgrade: %d ok, %d failed, unavailable for about %s", webPort, directOK.Load(), directFailed.Load(), span.Round(10*time.Millisecond))

	// Afterwards: one web container on the new definition, holding the
	// fixed port; no copy beside left.
	out := podman(t, "ps", "-a", "--filter", "label=io.outpost.appliance="+name, "--format", "{{.Names}}")
	for _, c := range lines(out) {
		if strings.Contains(c, "-up") {
			t.Errorf("copy beside left behind: %s", c)
		}
	}
	env := podman(t, "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}", name+"-web")
	if !strings.Contains(env, "WEB_REVISION=2") {
		t.Errorf("web runs the old definition:\n%s", env)
	}
	eventually(t, 30*time.Second, "the fixed port after the upgrade", func() error {
		if code, body, err := httpGet(direct); err != nil || code != 200 || body != index {
			return fmt.Errorf("%d %v %.100s", code, err, body)
		}
		return nil
	})
	if code, body, err := get(client, fmt.Sprintf("https://localhost:%d/api/hello", httpsPort)); err != nil || code != 200 {
		t.Errorf("/api/hello after the upgrade: %d %v %.200s", code, err, body)
	}
}

// caClient is an HTTPS client that trusts the CA root in caFile and
// dials 127.0.0.1:port whatever the URL's host.
func caClient(caFile string, port int) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
	}
	return &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DialContext: dial, MaxIdleConnsPerHost: 8}}, nil
}
