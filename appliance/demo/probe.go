package demo

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// defaultProbeTimeout bounds each check; below Compose's healthcheck
// timeouts in the demo compose file.
const defaultProbeTimeout = 2 * time.Second

// probeCheck is one check of the probe role.
type probeCheck struct {
	desc string
	run  func(ctx context.Context) error
}

// runProbe is the "probe" role, the healthcheck helper for images without
// a shell:
//
//	probe [--http URL]... [--tcp HOST:PORT]... [--file PATH]...
//	      [--max-age PATH=DURATION]... [--timeout D]
//
// Every check runs (each bounded by --timeout, default 2s); each failing
// one is printed to stdout. It returns nil when all pass, else an
// *ExitError with Code 1 (also for usage errors: Compose reserves 2).
// --http passes on a 2xx or 3xx status (redirects are not followed).
func runProbe(ctx context.Context, env *roleEnv, args []string) error {
	usage := func(err error) error {
		return &ExitError{Code: 1, Err: fmt.Errorf("probe: %w", err)}
	}
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	var checks []probeCheck
	client := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	fs.Func("http", "`URL` that must answer 2xx or 3xx (repeatable)", func(s string) error {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("want an http URL, got %q", s)
		}
		checks = append(checks, probeCheck{desc: "http " + s, run: func(ctx context.Context) error {
			return probeHTTP(ctx, client, s)
		}})
		return nil
	})
	fs.Func("tcp", "`HOST:PORT` that must accept a connection (repeatable)", func(s string) error {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("want HOST:PORT, got %q", s)
		}
		checks = append(checks, probeCheck{desc: "tcp " + s, run: func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", s)
			if err != nil {
				return err
			}
			return c.Close()
		}})
		return nil
	})
	fs.Func("file", "`PATH` that must exist (repeatable)", func(s string) error {
		checks = append(checks, probeCheck{desc: "file " + s, run: func(context.Context) error {
			_, err := os.Stat(s)
			return err
		}})
		return nil
	})
	fs.Func("max-age", "`PATH=DURATION`: PATH must exist and be modified within DURATION (repeatable)", func(s string) error {
		i := strings.LastIndex(s, "=")
		if i <= 0 {
			return fmt.Errorf("want PATH=DURATION, got %q", s)
		}
		path := s[:i]
		maxAge, err := time.ParseDuration(s[i+1:])
		if err != nil || maxAge <= 0 {
			return fmt.Errorf("want PATH=DURATION such as /tmp/heartbeat=10s, got %q", s)
		}
		checks = append(checks, probeCheck{desc: "max-age " + s, run: func(context.Context) error {
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			if age := time.Since(st.ModTime()); age > maxAge {
				return fmt.Errorf("modified %s ago, more than %s", age.Round(time.Millisecond), maxAge)
			}
			return nil
		}})
		return nil
	})
	timeout := fs.Duration("timeout", defaultProbeTimeout, "bound on each check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		// The flag package has printed the error and the usage.
		return &ExitError{Code: 1, Reported: true, Err: fmt.Errorf("probe: %w", err)}
	}
	if fs.NArg() > 0 {
		return usage(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if len(checks) == 0 {
		return usage(errors.New("no checks given: use --http, --tcp, --file or --max-age"))
	}
	if *timeout <= 0 {
		return usage(fmt.Errorf("invalid --timeout %s: want a positive duration", *timeout))
	}

	var failed []string
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		err := c.run(cctx)
		cancel()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", c.desc, err))
			fmt.Fprintf(env.stdout, "probe failed: %s: %v\n", c.desc, err)
		}
	}
	if len(failed) > 0 {
		return &ExitError{Code: 1, Reported: true, Err: fmt.Errorf("probe failed: %s", strings.Join(failed, "; "))}
	}
	return nil
}

// probeHTTP GETs url and accepts a 2xx or 3xx status.
func probeHTTP(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		// The start of the body usually says why (the demo API names
		// the store error it saw).
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		if body := strings.TrimSpace(string(b)); body != "" {
			return fmt.Errorf("status %s: %s", resp.Status, body)
		}
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
