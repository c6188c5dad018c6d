package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// outcome classifies one request.
type outcome int

const (
	okFrom  outcome = iota // 200 with the version upgraded from
	okTo                   // 200 with the version upgraded to
	connErr                // no answer: refused, reset, timeout
	badCode                // an answer other than 2xx
	badBody                // 2xx with a body naming neither version
)

func (o outcome) failed() bool { return o >= connErr }

// sample is one request of a load run.
type sample struct {
	// sched is when the request was due (the constant-rate schedule);
	// latency counts from then, so a request queued behind stalled ones
	// is charged the stall (no coordinated omission).
	sched   time.Time
	done    time.Time
	outcome outcome
	detail  string // what failed, for the report of the first failures
}

func (s sample) latency() time.Duration { return s.done.Sub(s.sched) }

// loader sends requests at a constant rate with a bounded number of
// requests in flight, and checks every answer's status and body.
type loader struct {
	url      string
	method   string
	rate     int
	conc     int
	from, to string // the versions the body may name
	client   *http.Client

	mu      sync.Mutex
	samples []sample
	// lastNotTo is when the latest answer that was not a correct one of
	// the new version completed.
	lastNotTo time.Time
}

func newLoader(url, method string, rate, conc int, from, to string) *loader {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conc,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &loader{url: url, method: method, rate: rate, conc: conc, from: from, to: to,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// run sends requests until ctx ends, then waits for those in flight and
// those already due.
func (l *loader) run(ctx context.Context) {
	due := make(chan time.Time, l.rate*600)
	var wg sync.WaitGroup
	for range l.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range due {
				l.record(l.do(t))
			}
		}()
	}
	interval := time.Second / time.Duration(l.rate)
	next := time.Now()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-time.After(time.Until(next)):
		}
		select {
		case due <- next:
		default: // the queue is full: the target is down for minutes
		}
		next = next.Add(interval)
	}
	close(due)
	wg.Wait()
	l.client.CloseIdleConnections()
}

func (l *loader) do(sched time.Time) sample {
	s := sample{sched: sched}
	req, err := http.NewRequest(l.method, l.url, nil)
	if err != nil {
		s.done, s.outcome, s.detail = time.Now(), connErr, err.Error()
		return s
	}
	resp, err := l.client.Do(req)
	if err != nil {
		s.done, s.outcome, s.detail = time.Now(), connErr, err.Error()
		return s
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	s.done = time.Now()
	switch {
	case err != nil:
		s.outcome, s.detail = connErr, "reading the body: "+err.Error()
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		s.outcome, s.detail = badCode, fmt.Sprintf("status %d: %.80s", resp.StatusCode, body)
	default:
		s.outcome, s.detail = l.check(body)
	}
	return s
}

// check reads the version from the echo role's JSON answer ("name").
func (l *loader) check(body []byte) (outcome, string) {
	var v struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return badBody, fmt.Sprintf("not the echo role's JSON: %.80s", body)
	}
	switch v.Name {
	case l.to:
		return okTo, ""
	case l.from:
		return okFrom, ""
	}
	return badBody, fmt.Sprintf("version %q, want %q or %q", v.Name, l.from, l.to)
}

func (l *loader) record(s sample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples = append(l.samples, s)
	if s.outcome != okTo && s.done.After(l.lastNotTo) {
		l.lastNotTo = s.done
	}
}

// settledSince reports whether every answer since t was a correct one of
// the new version, and at least one came.
func (l *loader) settledSince(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastNotTo.After(t) {
		return false
	}
	for i := len(l.samples) - 1; i >= 0; i-- {
		if l.samples[i].done.After(t) && l.samples[i].outcome == okTo {
			return true
		}
		if l.samples[i].done.Before(t) {
			break
		}
	}
	return false
}

// stats summarises one load run around an upgrade that began at start.
type stats struct {
	total   int
	byKind  [5]int
	max     time.Duration
	p99     time.Duration
	p50     time.Duration
	cmd     time.Duration   // the upgrade command's wall time
	newAt   time.Duration   // from start until only the new version answered correctly
	outage  time.Duration   // from the first failed request's schedule to the last failure's end; 0 without failures
	samples []string        // the first few distinct failures
	lat     []time.Duration // every request's latency, for pooled percentiles
}

func (s stats) failed() int { return s.byKind[connErr] + s.byKind[badCode] + s.byKind[badBody] }

func (l *loader) stats(start time.Time, cmd time.Duration) stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := stats{total: len(l.samples), cmd: cmd}
	lat := make([]time.Duration, 0, len(l.samples))
	var firstFail, lastFail time.Time
	seen := map[string]bool{}
	for _, s := range l.samples {
		st.byKind[s.outcome]++
		lat = append(lat, s.latency())
		if s.outcome.failed() {
			if firstFail.IsZero() || s.sched.Before(firstFail) {
				firstFail = s.sched
			}
			if s.done.After(lastFail) {
				lastFail = s.done
			}
			if len(st.samples) < 5 && !seen[s.detail] {
				seen[s.detail] = true
				st.samples = append(st.samples, s.detail)
			}
		}
	}
	if !firstFail.IsZero() {
		st.outage = lastFail.Sub(firstFail)
	}
	if l.lastNotTo.After(start) {
		st.newAt = l.lastNotTo.Sub(start)
	}
	st.max, st.p99, st.p50 = percentiles(lat)
	st.lat = lat
	return st
}

// percentiles returns the maximum, 99th and 50th percentile (nearest rank).
func percentiles(d []time.Duration) (maxD, p99, p50 time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	d = slices.Clone(d)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	return d[len(d)-1], rank(0.99), rank(0.50)
}
