package bundle

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// ErrNoSpace is returned (wrapped) when a filesystem has too little free
// space for a load; nothing has been changed then.
var ErrNoSpace = errors.New("not enough free disk space")

// diskNeed is space a step needs under path.
type diskNeed struct {
	path  string
	what  string
	bytes int64
}

// fsFree reports a filesystem's free space (for unprivileged users) and
// an identity for it; a field so tests can fake it.
var fsFree = func(path string) (free uint64, dev uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	var s syscall.Stat_t
	if err := syscall.Stat(path, &s); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), uint64(s.Dev), nil
}

// checkDisk sums the needs per filesystem and reports every filesystem
// short of space, saying what needs it.
func checkDisk(needs []diskNeed) error {
	type fsNeed struct {
		path  string
		free  uint64
		bytes int64
		what  []string
	}
	byDev := map[uint64]*fsNeed{}
	var order []uint64
	for _, n := range needs {
		if n.bytes <= 0 || n.path == "" {
			continue
		}
		p := existingParent(n.path)
		free, dev, err := fsFree(p)
		if err != nil {
			return fmt.Errorf("checking free space under %s: %w", p, err)
		}
		f, ok := byDev[dev]
		if !ok {
			f = &fsNeed{path: p, free: free}
			byDev[dev] = f
			order = append(order, dev)
		}
		f.bytes += n.bytes
		f.what = append(f.what, fmt.Sprintf("%s %s in %s", HumanBytes(n.bytes), n.what, n.path))
	}
	sort.Slice(order, func(i, j int) bool { return byDev[order[i]].path < byDev[order[j]].path })
	var short []string
	for _, d := range order {
		f := byDev[d]
		if uint64(f.bytes) > f.free {
			short = append(short, fmt.Sprintf("the filesystem of %s has %s free but needs %s (%s)",
				f.path, HumanBytes(int64(f.free)), HumanBytes(f.bytes), strings.Join(f.what, ", ")))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("%w: %s; free some space (e.g. `podman image prune`) or set TMPDIR to a larger filesystem, then retry — nothing was changed", ErrNoSpace, strings.Join(short, "; "))
	}
	return nil
}

// existingParent returns path or its nearest existing ancestor.
func existingParent(path string) string {
	p := filepath.Clean(path)
	for {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

// noFollow makes extraction refuse to write through a symlink.
const noFollow = syscall.O_NOFOLLOW
