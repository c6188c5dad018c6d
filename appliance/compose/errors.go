package compose

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every *ValidationError: the files were
// read and parsed, but the definition they make is not one Outpost can run.
var ErrInvalid = errors.New("invalid appliance definition")

// Problem is one reason a definition was rejected.
type Problem struct {
	// File is the Compose file the offending key was found in, as the caller
	// named it; empty when it could not be traced to one file.
	File string `json:"file,omitempty"`
	// Line is the 1-based line of the key in File; 0 when unknown.
	Line int `json:"line,omitempty"`
	// Key is the dotted key path, e.g. "services.convex.x-outpost.role".
	Key string `json:"key,omitempty"`
	// Message says what is wrong and, where it is not obvious, what to do.
	Message string `json:"message"`
}

// String renders the problem as "FILE:LINE: KEY: message".
func (p Problem) String() string { return located(p.File, p.Line, p.Key, p.Message) }

// ValidationError is returned (wrapped) by Load when the definition is
// invalid. It lists every problem found, not only the first.
type ValidationError struct {
	Problems []Problem
}

// Error renders one problem per line.
func (e *ValidationError) Error() string {
	var b strings.Builder
	if len(e.Problems) == 1 {
		b.WriteString("invalid appliance definition:\n")
	} else {
		fmt.Fprintf(&b, "invalid appliance definition (%d problems):\n", len(e.Problems))
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Warning is something in the definition Outpost ignores or changes; the
// appliance still loads.
type Warning struct {
	// File is the Compose file the key was found in, as the caller named it;
	// empty when unknown.
	File string `json:"file,omitempty"`
	// Line is the 1-based line of the key in File; 0 when unknown.
	Line int `json:"line,omitempty"`
	// Key is the dotted key path, e.g. "services.db.sysctls".
	Key string `json:"key,omitempty"`
	// Message says what Outpost does instead.
	Message string `json:"message"`
}

// String renders the warning as "FILE:LINE: KEY: message".
func (w Warning) String() string { return located(w.File, w.Line, w.Key, w.Message) }

func located(file string, line int, key, msg string) string {
	var parts []string
	switch {
	case file != "" && line > 0:
		parts = append(parts, file+":"+strconv.Itoa(line))
	case file != "":
		parts = append(parts, file)
	}
	if key != "" {
		parts = append(parts, key)
	}
	parts = append(parts, msg)
	return strings.Join(parts, ": ")
}

// report collects problems and warnings while a definition is converted.
type report struct {
	src      *sourceIndex
	problems []Problem
	warnings []Warning
}

// errorf records a problem at the first of keys found in the source files
// (keys are alternative spellings of the same setting, e.g. the service-level
// and the top-level x-outpost block).
func (r *report) errorf(keys []string, format string, args ...any) {
	file, line, key := r.src.locate(keys)
	r.problems = append(r.problems, Problem{File: file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

func (r *report) warnf(keys []string, format string, args ...any) {
	file, line, key := r.src.locate(keys)
	r.warnings = append(r.warnings, Warning{File: file, Line: line, Key: key, Message: fmt.Sprintf(format, args...)})
}

// err returns nil or a *ValidationError with the problems sorted by file
// order, line and key, duplicates removed.
func (r *report) err() error {
	if len(r.problems) == 0 {
		return nil
	}
	ps := dedupe(r.problems, r.src.fileOrder)
	return &ValidationError{Problems: ps}
}

// sortedWarnings returns the warnings in file and line order, duplicates
// removed.
func (r *report) sortedWarnings() []Warning {
	ws := make([]Problem, len(r.warnings))
	for i, w := range r.warnings {
		ws[i] = Problem(w)
	}
	ps := dedupe(ws, r.src.fileOrder)
	out := make([]Warning, len(ps))
	for i, p := range ps {
		out[i] = Warning(p)
	}
	return out
}

func dedupe(in []Problem, fileOrder func(string) int) []Problem {
	ps := append([]Problem(nil), in...)
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if fa, fb := fileOrder(a.File), fileOrder(b.File); fa != fb {
			return fa < fb
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Message < b.Message
	})
	out := ps[:0]
	for i, p := range ps {
		if i > 0 && p == ps[i-1] {
			continue
		}
		out = append(out, p)
	}
	return out
}
