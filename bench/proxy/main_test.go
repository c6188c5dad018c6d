package main

import (
	"os"
	"testing"
	"time"
)

const wrkOutput = `Running 10s test @ http://127.0.0.1:18081/1k
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  21.33ms   82.11%
    Req/Sec     7.70k   612.43     8.91k    71.50%
  Latency Distribution
     50%    1.91ms
     75%    2.50ms
     90%    3.20ms
     99%  850.00us
  153213 requests in 10.01s, 179.60MB read
Requests/sec:  15306.55
Transfer/sec:     17.94MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	if r.rps != 15306.55 || r.requests != 153213 || r.p50 != 1910*time.Microsecond || r.p99 != 850*time.Microsecond {
		t.Fatalf("parsed %+v", r)
	}
	if _, err := parseWrk(wrkOutput + "  Non-2xx or 3xx responses: 12\n"); err == nil {
		t.Fatal("non-2xx responses were not reported")
	}
	if _, err := parseWrk("garbage"); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestBackendDial(t *testing.T) {
	d, err := backendDial([]byte(`{"routes":[{"upstreams":[{"service":"backend","port":8080,"dial":"127.0.0.1:23456"}]}]}`))
	if err != nil || d != "127.0.0.1:23456" {
		t.Fatalf("dial = %q, %v", d, err)
	}
}

func TestMedian(t *testing.T) {
	m := median([]result{{rps: 3, p50: 3, p99: 1}, {rps: 1, p50: 2, p99: 9}, {rps: 2, p50: 1, p99: 5}})
	if m.rps != 2 || m.p50 != 2 || m.p99 != 5 {
		t.Fatalf("median = %+v", m)
	}
}

func TestProcCPU(t *testing.T) {
	if procCPU(0) != 0 {
		t.Fatal("pid 0 has CPU time")
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	if d := procCPU(os.Getpid()); d <= 0 {
		t.Fatalf("own CPU time = %s", d)
	}
}
