package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// BackupPolicy is x-outpost.backup: when the daemon takes snapshots by
// itself and which ones it keeps.
type BackupPolicy struct {
	// Schedule is the interval between scheduled snapshots, counted from
	// the last complete one; 0 means no scheduled snapshots.
	Schedule time.Duration `json:"schedule,omitempty"`
	// KeepLast keeps the N newest complete snapshots; 0: no count rule.
	KeepLast int `json:"keep_last,omitempty"`
	// KeepWithin keeps every complete snapshot younger than this; 0: no
	// age rule. With neither rule nothing is pruned.
	KeepWithin time.Duration `json:"keep_within,omitempty"`
	// Dir is where snapshots are written (absolute); empty: the state
	// directory's backups/.
	Dir string `json:"dir,omitempty"`
	// Quiesce says how services without a backup hook are held still while
	// their volumes are copied: "auto" (default: pause where the host can,
	// else stop), "pause", "stop" or "none" (copy live).
	Quiesce string `json:"quiesce,omitempty"`
}

// Quiesce modes of BackupPolicy.Quiesce.
const (
	QuiesceAuto  = "auto"
	QuiescePause = "pause"
	QuiesceStop  = "stop"
	QuiesceNone  = "none"
)

// ValidQuiesce reports whether s is a quiesce mode ("" counts as auto).
func ValidQuiesce(s string) bool {
	switch s {
	case "", QuiesceAuto, QuiescePause, QuiesceStop, QuiesceNone:
		return true
	}
	return false
}

// ParseAge parses a retention age or schedule interval: a Go duration
// ("36h", "90m") or a whole number of days or weeks ("14d", "2w"), or one
// of "@hourly", "@daily", "@weekly". It must be positive.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "@hourly":
		return time.Hour, nil
	case "@daily":
		return 24 * time.Hour, nil
	case "@weekly":
		return 7 * 24 * time.Hour, nil
	}
	var d time.Duration
	var err error
	if n, unit := strings.TrimRight(s, "dw"), strings.TrimLeft(s, "0123456789"); (unit == "d" || unit == "w") && n != "" {
		days, perr := strconv.Atoi(n)
		if perr != nil {
			return 0, fmt.Errorf("%q is not a duration such as 14d, 36h or @daily", s)
		}
		d = time.Duration(days) * 24 * time.Hour
		if unit == "w" {
			d *= 7
		}
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 14d, 36h or @daily", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}
