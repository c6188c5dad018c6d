package daemon

import "syscall"

// umask sets the process umask and returns the previous one; used so the
// control socket is never briefly world-accessible.
func umask(mask int) int { return syscall.Umask(mask) }
