package compose

import (
	"path/filepath"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// backupPolicy converts and checks x-outpost.backup.
func (c *converter) backupPolicy() {
	x := c.x.Backup
	if x == nil {
		return
	}
	key := Extension + ".backup."
	out := &model.BackupPolicy{Dir: x.Dir, Quiesce: x.Quiesce}
	if x.Schedule != "" {
		d, err := model.ParseAge(x.Schedule)
		switch {
		case err != nil:
			c.rep.errorf([]string{key + "schedule"}, "%v", err)
		case d < time.Minute:
			c.rep.errorf([]string{key + "schedule"}, "%q is shorter than the minimum of 1m", x.Schedule)
		default:
			out.Schedule = d
		}
	}
	if x.KeepLast != nil {
		if *x.KeepLast < 1 {
			c.rep.errorf([]string{key + "keep_last"}, "%d must be at least 1 (leave it out to keep snapshots by age only)", *x.KeepLast)
		} else {
			out.KeepLast = *x.KeepLast
		}
	}
	if x.KeepWithin != "" {
		d, err := model.ParseAge(x.KeepWithin)
		if err != nil {
			c.rep.errorf([]string{key + "keep_within"}, "%v", err)
		} else {
			out.KeepWithin = d
		}
	}
	if x.Dir != "" && !filepath.IsAbs(x.Dir) {
		c.rep.errorf([]string{key + "dir"}, "%q must be an absolute path", x.Dir)
	}
	if !model.ValidQuiesce(x.Quiesce) {
		c.rep.errorf([]string{key + "quiesce"}, "%q is not one of auto, pause, stop, none", x.Quiesce)
	}
	c.appliance.Backup = out
}
