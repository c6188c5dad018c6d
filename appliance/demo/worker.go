package demo

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// runWorker is the "worker" role: no port; every INTERVAL it calls the
// API's /api/hello and, when that answers 2xx, writes the time to the
// heartbeat file. Its healthcheck is `probe --max-age HEARTBEAT_FILE=D`
// with D at least three intervals.
//
// Environment: INTERVAL (2s), API_URL (http://api:8080), HEARTBEAT_FILE
// (/tmp/worker-heartbeat), READY_FILE (/tmp/ready, touched after the
// first heartbeat).
func runWorker(ctx context.Context, env *roleEnv, _ []string) error {
	interval, err := env.duration("INTERVAL", 2*time.Second)
	if err != nil {
		return err
	}
	if interval <= 0 {
		return fmt.Errorf("invalid INTERVAL=%s: want a positive duration", interval)
	}
	apiURL, err := baseURL(env, "API_URL", "http://api:8080")
	if err != nil {
		return err
	}
	heartbeat := env.str("HEARTBEAT_FILE", "/tmp/worker-heartbeat")
	readyFile := env.readyFile()
	if err := removeMarkers(heartbeat, readyFile); err != nil {
		return err
	}
	client := peerClient(max(interval, time.Second))
	env.log.Info("worker started", "api_url", apiURL, "interval", interval)

	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	beats, failing := 0, false
	for {
		if err := callAPI(ctx, client, apiURL+"/api/hello"); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				env.log.Warn("api call failed", "error", err)
				failing = true
			}
		} else {
			if err := touch(heartbeat); err != nil {
				return err
			}
			beats++
			if beats == 1 {
				if err := touch(readyFile); err != nil {
					return err
				}
				env.log.Info("first heartbeat, worker ready", "heartbeat_file", heartbeat)
			} else if failing {
				env.log.Info("api reachable again")
			}
			failing = false
		}
		select {
		case <-ctx.Done():
			env.log.Info("worker stopping", "heartbeats", beats)
			return nil
		case <-ticker.C:
		}
	}
}

// callAPI GETs url and returns nil on a 2xx answer.
func callAPI(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
