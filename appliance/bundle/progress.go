package bundle

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress receives the byte counts of a long step (verifying, loading,
// writing). Implementations are safe for concurrent use.
type Progress interface {
	// Start begins a step of total bytes (0 when unknown), ending any
	// step still open.
	Start(step string, total int64)
	// Add counts n more bytes done.
	Add(n int64)
	// Finish ends the current step.
	Finish()
}

// NoProgress discards progress.
func NoProgress() Progress { return noProgress{} }

type noProgress struct{}

// Start implements Progress.
func (noProgress) Start(string, int64) {}

// Add implements Progress.
func (noProgress) Add(int64) {}

// Finish implements Progress.
func (noProgress) Finish() {}

// NewProgress reports to w: a redrawn bar with bytes, rate and ETA when w
// is a terminal (tty), else a plain line every few seconds and one per
// finished step, for logs and CI.
func NewProgress(w io.Writer, tty bool) Progress {
	if tty {
		return &barProgress{w: w}
	}
	return &lineProgress{w: w, every: 3 * time.Second, now: time.Now}
}

// barProgress draws a progressbar/v3 bar per step.
type barProgress struct {
	mu  sync.Mutex
	w   io.Writer
	bar *progressbar.ProgressBar
}

// Start implements Progress.
func (b *barProgress) Start(step string, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finishLocked()
	if total <= 0 {
		total = -1
	}
	b.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%-15s", step)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }),
		progressbar.OptionUseIECUnits(false),
	)
}

// Add implements Progress.
func (b *barProgress) Add(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Add64(n)
	}
}

// Finish implements Progress.
func (b *barProgress) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finishLocked()
}

func (b *barProgress) finishLocked() {
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}

// lineProgress prints plain lines, at most one per interval.
type lineProgress struct {
	mu      sync.Mutex
	w       io.Writer
	every   time.Duration
	now     func() time.Time
	step    string
	total   int64
	done    int64
	started time.Time
	last    time.Time
	open    bool
}

// Start implements Progress.
func (l *lineProgress) Start(step string, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.finishLocked()
	l.step, l.total, l.done, l.open = step, total, 0, true
	l.started = l.now()
	l.last = l.started
}

// Add implements Progress.
func (l *lineProgress) Add(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done += n
	if t := l.now(); t.Sub(l.last) >= l.every {
		l.last = t
		l.printLocked(t, false)
	}
}

// Finish implements Progress.
func (l *lineProgress) Finish() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.finishLocked()
}

func (l *lineProgress) finishLocked() {
	if !l.open {
		return
	}
	l.open = false
	l.printLocked(l.now(), true)
}

func (l *lineProgress) printLocked(t time.Time, final bool) {
	el := t.Sub(l.started)
	rate := 0.0
	if el > 0 {
		rate = float64(l.done) / el.Seconds()
	}
	switch {
	case final:
		fmt.Fprintf(l.w, "%s: done, %s in %s (%s/s)\n", l.step, HumanBytes(l.done), el.Round(100*time.Millisecond), HumanBytes(int64(rate)))
	case l.total > 0:
		eta := "?"
		if rate > 0 {
			eta = time.Duration(float64(l.total-l.done) / rate * float64(time.Second)).Round(time.Second).String()
		}
		fmt.Fprintf(l.w, "%s: %3.0f%% %s of %s, %s/s, ETA %s\n", l.step, 100*float64(l.done)/float64(l.total), HumanBytes(l.done), HumanBytes(l.total), HumanBytes(int64(rate)), eta)
	default:
		fmt.Fprintf(l.w, "%s: %s, %s/s\n", l.step, HumanBytes(l.done), HumanBytes(int64(rate)))
	}
}

// HumanBytes formats n in decimal units (kB, MB, GB), as podman does.
func HumanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}
