package checks

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the report as a table for people: one line per check
// (subject, check, status, detail) with notes indented below, then totals.
func WriteTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := "IMAGE"
	switch r.Kind {
	case KindSmoke:
		head = "SUBJECT"
	}
	fmt.Fprintf(tw, "%s\tCHECK\tSTATUS\tDETAIL\n", head)
	prev := ""
	for _, res := range r.Results {
		subj := res.Subject
		if subj == prev {
			subj = ""
		} else {
			prev = res.Subject
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", subj, res.Check, res.Status, res.Detail)
		for _, n := range res.Notes {
			for _, line := range strings.Split(strings.TrimRight(n, "\n"), "\n") {
				fmt.Fprintf(tw, "\t\t\t  %s\n", line)
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := r.Summary
	if s == nil {
		r.finish()
		s = r.Summary
	}
	verdict := "passed"
	if r.Failed() {
		verdict = "FAILED"
	}
	what := r.Appliance
	if r.Project != "" {
		what += " (as " + r.Project + ")"
	}
	_, err := fmt.Fprintf(w, "\ncheck %s %s: %s — %d passed, %d warnings, %d failed, %d skipped in %s\n",
		r.Kind, what, verdict, s[Pass], s[Warn], s[Fail], s[Skip], r.Duration.Round(100*time.Millisecond))
	return err
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// JUnit XML, the dialect Jenkins, GitLab and GitHub reporters read.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string      `xml:"name,attr"`
	Tests     int         `xml:"tests,attr"`
	Failures  int         `xml:"failures,attr"`
	Skipped   int         `xml:"skipped,attr"`
	Time      string      `xml:"time,attr"`
	Timestamp string      `xml:"timestamp,attr,omitempty"`
	Cases     []junitCase `xml:"testcase"`
}

type junitCase struct {
	Classname string        `xml:"classname,attr"`
	Name      string        `xml:"name,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Body    string `xml:",chardata"`
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// WriteJUnit writes the report as JUnit XML: one test suite per subject,
// one test case per check. FAIL becomes a failure, SKIP a skipped case,
// WARN a passing case whose system-out says WARN.
func WriteJUnit(w io.Writer, r *Report) error {
	out := junitSuites{Name: "outpost check " + r.Kind + " " + r.Appliance, Time: seconds(r.Duration)}
	index := map[string]int{}
	var suiteTime []time.Duration
	for _, res := range r.Results {
		i, ok := index[res.Subject]
		if !ok {
			i = len(out.Suites)
			index[res.Subject] = i
			suiteTime = append(suiteTime, 0)
			ts := ""
			if !r.Started.IsZero() {
				ts = r.Started.UTC().Format("2006-01-02T15:04:05")
			}
			out.Suites = append(out.Suites, junitSuite{Name: r.Kind + ": " + res.Subject, Timestamp: ts})
		}
		s := &out.Suites[i]
		// Reporters split classnames at dots into packages: keep the
		// subject (an image reference has dots) in one piece.
		c := junitCase{Classname: "outpost.check." + r.Kind + "." + strings.ReplaceAll(res.Subject, ".", "_"), Name: res.Check, Time: seconds(res.Duration)}
		body := strings.Join(res.Notes, "\n")
		switch res.Status {
		case Fail:
			c.Failure = &junitMessage{Message: res.Detail, Type: string(Fail), Body: body}
			s.Failures++
			out.Failures++
		case Skip:
			c.Skipped = &junitMessage{Message: res.Detail}
			s.Skipped++
			out.Skipped++
		default:
			c.SystemOut = string(res.Status) + ": " + res.Detail
			if body != "" {
				c.SystemOut += "\n" + body
			}
		}
		s.Tests++
		out.Tests++
		s.Cases = append(s.Cases, c)
		suiteTime[i] += res.Duration
	}
	for i := range out.Suites {
		out.Suites[i].Time = seconds(suiteTime[i])
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("writing JUnit XML: %w", err)
	}
	_, err := io.WriteString(w, "\n")
	return err
}
