package backup

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The volume copy format is a PAX tar of the volume's root: the first entry
// is "./" (the root itself, so its owner and mode come back too), then every
// entry below it in lexical order, with numeric owners, modes including
// setuid/setgid/sticky, modification times, extended attributes (ACLs,
// capabilities) and hard links. It is written and read inside a helper
// container running as root in the rootless user namespace, so the owners
// are the IDs the appliance's containers see.

// xattrPrefix is how PAX records carry extended attributes (GNU tar and
// Go's archive/tar agree on it).
const xattrPrefix = "SCHILY.xattr."

// writeTar writes the tree under root to w.
func writeTar(root string, w io.Writer, warn func(string)) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := "./"
		if rel != "." {
			name = "./" + filepath.ToSlash(rel)
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Unix()),
			Format:  tar.FormatPAX,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			if name != "./" {
				hdr.Name += "/"
			}
		case unix.S_IFREG:
			hdr.Typeflag = tar.TypeReg
			hdr.Size = st.Size
			if st.Nlink > 1 {
				key := inode{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				} else {
					links[key] = name
				}
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("reading link %s: %w", p, err)
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			warn(fmt.Sprintf("%s: skipped (a socket cannot be copied)", name))
			return nil
		}
		if xa := readXattrs(p); len(xa) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range xa {
				hdr.PAXRecords[xattrPrefix+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(p)
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			// A file that grows while it is copied (a live copy) is cut at
			// the size in its header; one that shrinks is padded, so the
			// stream stays a valid tar.
			n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", p, err)
			}
			if n < hdr.Size {
				warn(fmt.Sprintf("%s: shrank while it was copied", name))
				if _, err := io.CopyN(tw, zeros{}, hdr.Size-n); err != nil {
					return fmt.Errorf("writing %s: %w", name, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// tarSize estimates the size of writeTar's output for root: file contents
// rounded up to tar blocks, plus a header block per entry (long names and
// extended attributes add a few more) and the end-of-archive blocks. It
// only reads metadata; progress bars use it as their total.
func tarSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n += 512
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += (fi.Size() + 511) &^ 511
		}
		return nil
	})
	return n + 1024, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// readXattrs returns p's extended attributes it can read; none on error.
func readXattrs(p string) map[string]string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz <= 0 {
		return nil
	}
	names := make([]byte, sz)
	sz, err = unix.Llistxattr(p, names)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(names[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, name, nil)
		if err != nil || vsz < 0 {
			continue
		}
		val := make([]byte, vsz)
		vsz, err = unix.Lgetxattr(p, name, val)
		if err != nil {
			continue
		}
		out[name] = string(val[:vsz])
	}
	return out
}

// clearDir removes everything inside dir, but not dir itself (a volume's
// root is a mount point).
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("emptying %s: %w", dir, err)
		}
	}
	return nil
}

// extractTar empties dst and extracts the tar stream r into it, restoring
// owners, modes, times, extended attributes and links. The root entry "./"
// sets dst's own owner and mode. Entries must stay inside dst. Owners the
// user namespace cannot map, device nodes and extended attributes the
// kernel refuses are reported through warn and skipped.
func extractTar(r io.Reader, dst string, warn func(string)) error {
	if err := clearDir(dst); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	type dirMeta struct {
		path string
		hdr  *tar.Header
	}
	var dirs []dirMeta
	symlinks := map[string]bool{}
	warned := map[string]bool{}
	warnOnce := func(kind, msg string) {
		if !warned[kind] {
			warned[kind] = true
			warn(msg)
		}
	}
	buf := make([]byte, 1<<20)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the volume copy: %w", err)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(hdr.Name, "./"), "/")
		if rel == "." {
			rel = ""
		}
		if rel != "" && (path.Clean(rel) != rel || !filepath.IsLocal(rel)) {
			return fmt.Errorf("volume copy entry %q leaves the volume: refusing it", hdr.Name)
		}
		for d := path.Dir(rel); d != "." && d != "/" && rel != ""; d = path.Dir(d) {
			if symlinks[d] {
				return fmt.Errorf("volume copy entry %q goes through the symbolic link %q: refusing it", hdr.Name, d)
			}
		}
		p := filepath.Join(dst, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if rel != "" {
				if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return fmt.Errorf("creating %s: %w", p, err)
				}
			}
			dirs = append(dirs, dirMeta{p, hdr})
			continue
		case tar.TypeReg, tar.TypeRegA:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return fmt.Errorf("creating %s: %w", p, err)
			}
			_, err = io.CopyBuffer(f, tr, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing %s: %w", p, err)
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, p); err != nil {
				return fmt.Errorf("creating link %s: %w", p, err)
			}
			symlinks[rel] = true
		case tar.TypeLink:
			target := strings.TrimSuffix(strings.TrimPrefix(hdr.Linkname, "./"), "/")
			if path.Clean(target) != target || !filepath.IsLocal(target) {
				return fmt.Errorf("volume copy hard link %q → %q leaves the volume: refusing it", hdr.Name, hdr.Linkname)
			}
			if err := os.Link(filepath.Join(dst, filepath.FromSlash(target)), p); err != nil {
				return fmt.Errorf("creating hard link %s: %w", p, err)
			}
			continue // shares the target's metadata
		case tar.TypeChar, tar.TypeBlock:
			mode := uint32(unix.S_IFCHR)
			if hdr.Typeflag == tar.TypeBlock {
				mode = unix.S_IFBLK
			}
			if err := unix.Mknod(p, mode|uint32(hdr.Mode&0o7777), int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
				warn(fmt.Sprintf("%s: device node not restored: %v", hdr.Name, err))
				continue
			}
		case tar.TypeFifo:
			if err := unix.Mkfifo(p, uint32(hdr.Mode&0o7777)); err != nil {
				return fmt.Errorf("creating fifo %s: %w", p, err)
			}
		default:
			warn(fmt.Sprintf("%s: entry type %q skipped", hdr.Name, hdr.Typeflag))
			continue
		}
		applyMeta(p, hdr, warnOnce)
	}
	// Directories last, deepest first: creating entries inside them
	// changed their times, and a read-only one would have refused them.
	for i := len(dirs) - 1; i >= 0; i-- {
		applyMeta(dirs[i].path, dirs[i].hdr, warnOnce)
	}
	// Drain what follows the end-of-archive marker so the sender never
	// writes into a closed pipe.
	_, _ = io.Copy(io.Discard, r)
	return nil
}

// applyMeta sets owner, mode, extended attributes and times of p from hdr.
// Owner first: chown clears setuid/setgid bits.
func applyMeta(p string, hdr *tar.Header, warn func(kind, msg string)) {
	if err := unix.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		warn("chown", fmt.Sprintf("owner %d:%d of %s (and maybe others) not restored: %v (is the ID outside the user namespace?)", hdr.Uid, hdr.Gid, hdr.Name, err))
	}
	var xattrs []string
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			xattrs = append(xattrs, k)
		}
	}
	sort.Strings(xattrs)
	for _, k := range xattrs {
		if err := unix.Lsetxattr(p, strings.TrimPrefix(k, xattrPrefix), []byte(hdr.PAXRecords[k]), 0); err != nil {
			warn("xattr:"+k, fmt.Sprintf("extended attribute %s of %s (and maybe others) not restored: %v", strings.TrimPrefix(k, xattrPrefix), hdr.Name, err))
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := unix.Chmod(p, uint32(hdr.Mode&0o7777)); err != nil {
			warn("chmod", fmt.Sprintf("mode of %s not restored: %v", hdr.Name, err))
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(hdr.ModTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if hdr.AccessTime.After(time.Time{}) {
		ts[0] = unix.NsecToTimespec(hdr.AccessTime.UnixNano())
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		warn("times", fmt.Sprintf("times of %s not restored: %v", hdr.Name, err))
	}
}

// readRootHeader returns the first entry of a volume copy: its root.
func readRootHeader(r io.Reader) (*tar.Header, error) {
	hdr, err := tar.NewReader(r).Next()
	if err != nil {
		return nil, fmt.Errorf("reading the volume copy's first entry: %w", err)
	}
	if hdr.Name != "./" || hdr.Typeflag != tar.TypeDir {
		return nil, fmt.Errorf("volume copy starts with %q, not its root \"./\"", hdr.Name)
	}
	return hdr, nil
}

// resetDir empties dir and gives it the owner and mode of a volume copy's
// root, as if the volume were new: the service then initialises it (a
// database creates an empty cluster for its restore hook to load into).
func resetDir(dir string, uid, gid int, mode int64) error {
	if err := clearDir(dir); err != nil {
		return err
	}
	if err := unix.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", dir, err)
	}
	if err := unix.Chmod(dir, uint32(mode&0o7777)); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", dir, err)
	}
	return nil
}
