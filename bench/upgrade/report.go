package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// line is one round's result, for the progress output.
func (s stats) line() string {
	l := fmt.Sprintf("failed %d/%d (conn %d, non-2xx %d, body %d)  max %s  p99 %s  command %s  new version alone after %s",
		s.failed(), s.total, s.byKind[connErr], s.byKind[badCode], s.byKind[badBody], fmtDur(s.max), fmtDur(s.p99), fmtSec(s.cmd), fmtSec(s.newAt))
	if s.outage > 0 {
		l += "  failures over " + fmtSec(s.outage)
	}
	for _, d := range s.samples {
		l += "\n      " + d
	}
	return l
}

// summary is a variant's results over all rounds.
type summary struct {
	name                string
	rounds              int
	failed, total       int
	byKind              [5]int
	max, p99, p50       time.Duration // max: over all rounds; p99, p50: pooled
	cmd, newAt, outage  time.Duration // medians over rounds
	maxOutage           time.Duration
	cmdRounds, newAtAll []time.Duration
}

func summarize(name string, rs []stats) summary {
	s := summary{name: name, rounds: len(rs)}
	var lat []time.Duration
	var outages []time.Duration
	for _, r := range rs {
		s.failed += r.failed()
		s.total += r.total
		for i := range s.byKind {
			s.byKind[i] += r.byKind[i]
		}
		lat = append(lat, r.lat...)
		s.cmdRounds = append(s.cmdRounds, r.cmd)
		s.newAtAll = append(s.newAtAll, r.newAt)
		outages = append(outages, r.outage)
		s.maxOutage = max(s.maxOutage, r.outage)
	}
	s.max, s.p99, s.p50 = percentiles(lat)
	s.cmd, s.newAt, s.outage = medianDur(s.cmdRounds), medianDur(s.newAtAll), medianDur(outages)
	return s
}

func medianDur(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	if len(d)%2 == 1 {
		return d[len(d)/2]
	}
	return (d[len(d)/2-1] + d[len(d)/2]) / 2
}

func report(w io.Writer, c config, vs []*variant, results map[string][]stats, before, after string) {
	fmt.Fprintf(w, "\nupgrade benchmark: %s /version at %d req/s, at most %d in flight, %d rounds (v1 → v2, v2 → v1, ...); load from %s before each upgrade command until only the new version answered for %s\n",
		c.method, c.rate, c.conc, c.rounds, c.pre, c.settle)
	fmt.Fprintf(w, "load average before %s, after %s\n\n", before, after)
	var names []string
	for _, v := range vs {
		names = append(names, v.name)
		if _, ok := results[v.name+":port"]; ok {
			names = append(names, v.name+":port")
		}
	}
	sums := map[string]summary{}
	for _, n := range names {
		sums[n] = summarize(n, results[n])
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\tfailed\tconn/non-2xx/body\trequests\tmax latency\tp99\tp50\tcommand (median)\tnew version alone (median)\tfailures span (median/max)")
	for _, n := range names {
		s := sums[n]
		fmt.Fprintf(tw, "%s\t%d\t%d/%d/%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s/%s\n", n, s.failed, s.byKind[connErr], s.byKind[badCode], s.byKind[badBody], s.total,
			fmtDur(s.max), fmtDur(s.p99), fmtDur(s.p50), fmtSec(s.cmd), fmtSec(s.newAt), fmtSec(s.outage), fmtSec(s.maxOutage))
	}
	tw.Flush()
	base, ok := sums["outpost"]
	if !ok {
		base, ok = sums["outpost-fixed"]
	}
	if ok {
		fmt.Fprintf(w, "\nratios against %s (variant / %s)\n", base.name, base.name)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "variant\tfailed requests\tmax latency\tp99\tcommand\tnew version alone")
		for _, n := range names {
			if n == base.name {
				continue
			}
			s := sums[n]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n, countRatio(s.failed, base.failed), ratio(s.max, base.max), ratio(s.p99, base.p99), ratio(s.cmd, base.cmd), ratio(s.newAt, base.newAt))
		}
		tw.Flush()
		verdict := "met"
		if base.failed > 0 {
			verdict = "missed"
		}
		fmt.Fprintf(w, "\ntarget: 0 failed requests for %s: %s (%d of %d)\n", base.name, verdict, base.failed, base.total)
	}
	for _, v := range vs {
		if v.note != "" {
			fmt.Fprintf(w, "\n%s:\n  %s\n", v.name, strings.ReplaceAll(v.note, "\n", "\n  "))
		}
	}
	if c.markdown {
		fmt.Fprintln(w, "\n| variant | failed | conn / non-2xx / body | requests | max latency | p99 | p50 | command (median) | new version alone (median) | failures span (median / max) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, n := range names {
			s := sums[n]
			fmt.Fprintf(w, "| %s | %d | %d / %d / %d | %d | %s | %s | %s | %s | %s | %s / %s |\n", n, s.failed, s.byKind[connErr], s.byKind[badCode], s.byKind[badBody], s.total,
				fmtDur(s.max), fmtDur(s.p99), fmtDur(s.p50), fmtSec(s.cmd), fmtSec(s.newAt), fmtSec(s.outage), fmtSec(s.maxOutage))
		}
		if ok {
			fmt.Fprintf(w, "\n| variant / %s | failed requests | max latency | p99 | command | new version alone |\n|---|---:|---:|---:|---:|---:|\n", base.name)
			for _, n := range names {
				if n == base.name {
					continue
				}
				s := sums[n]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", n, countRatio(s.failed, base.failed), ratio(s.max, base.max), ratio(s.p99, base.p99), ratio(s.cmd, base.cmd), ratio(s.newAt, base.newAt))
			}
		}
	}
}

func ratio(a, b time.Duration) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}

// countRatio compares failure counts; against 0 it says so instead of
// dividing.
func countRatio(a, b int) string {
	if b == 0 {
		return fmt.Sprintf("%d vs 0", a)
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}

func fmtDur(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	if d >= 10*time.Second {
		return fmtSec(d)
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func fmtSec(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
