package volumes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The copy runs inside a helper container as root of the rootless user
// namespace (so it may read every file and give every copy its owner),
// executing this outpost binary as `outpost volume-copy`. It walks the
// source once, copying each entry and hashing it as it goes, then walks the
// destination and hashes it the same way: the two digests must be equal.

// Marker file names, in the root of the destination volume. The prefix is
// followed by the source's Podman volume name.
const (
	// MarkerPrefix names the completion marker: the copy was verified.
	MarkerPrefix = ".outpost-migrated-from-"
	// PartialPrefix names the in-progress marker, written into an empty
	// destination before the copy starts. A destination holding it (and
	// no completion marker) holds an interrupted copy of ours, which the
	// next run empties and redoes.
	PartialPrefix = ".outpost-migrating-from-"
)

// isMarker reports whether a root entry is one of Outpost's markers; markers
// are neither copied nor hashed.
func isMarker(name string) bool {
	return strings.HasPrefix(name, MarkerPrefix) || strings.HasPrefix(name, PartialPrefix)
}

// Marker is the content of a completion marker (JSON).
type Marker struct {
	// From and To are the Podman volume names.
	From string `json:"from"`
	To   string `json:"to"`
	// Files counts the entries copied (files, directories, links...)
	// below the volume's root; Bytes sums the regular files' sizes.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// Checksum is the tree digest (TreeChecksum) of source and destination.
	Checksum string `json:"checksum"`
	// CompletedAt is when the copy was verified.
	CompletedAt time.Time `json:"completed_at"`
}

// CopyOptions are the arguments of the copy tool.
type CopyOptions struct {
	// From and To are the mounted source and destination directories.
	From, To string
	// FromName and ToName are the volumes' Podman names, for the markers.
	FromName, ToName string
}

// CopyReport is what the copy tool prints (JSON) on its standard output.
type CopyReport struct {
	// Status is "copied", "skipped" (the completion marker of FromName is
	// present and the source unchanged since), "populated" (the destination
	// holds data not ours) or "diverged" (both changed since the copy).
	Status string `json:"status"`
	// Marker is the completion marker written or found.
	Marker Marker `json:"marker"`
	// Entries names a few of the entries of a populated destination.
	Entries []string `json:"entries,omitempty"`
	// Warnings are entries that could not be copied (sockets).
	Warnings []string `json:"warnings,omitempty"`
}

// Copy statuses.
const (
	StatusCopied    = "copied"
	StatusSkipped   = "skipped"
	StatusPopulated = "populated"
	// StatusDiverged: the completion marker is there, but source and
	// destination have both changed since the copy.
	StatusDiverged = "diverged"
)

// Idle is the helper container's main process: it waits until stopped (at
// most a day) while exec sessions do the work.
func Idle(ctx context.Context) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(24 * time.Hour):
	}
	return nil
}

// CopyTree is the copy tool (`outpost volume-copy`): it copies the tree at
// o.From into the directory o.To, preserving owners, modes, times, symlinks
// and hard links, verifies both trees' digests, and writes the completion
// marker. It never touches a destination holding anything but its own
// markers (StatusPopulated), or one written since its copy
// (StatusDiverged); see recheck for a destination already copied.
func CopyTree(o CopyOptions) (CopyReport, error) {
	if o.From == "" || o.To == "" || o.FromName == "" || o.ToName == "" {
		return CopyReport{}, errors.New("volume-copy: --from, --to, --from-name and --to-name are required")
	}
	done := filepath.Join(o.To, MarkerPrefix+o.FromName)
	partial := filepath.Join(o.To, PartialPrefix+o.FromName)
	var warnings []string
	if data, err := os.ReadFile(done); err == nil {
		var m Marker
		if err := json.Unmarshal(data, &m); err != nil {
			return CopyReport{}, fmt.Errorf("reading completion marker %s: %w (remove it only if you know the copy is complete)", done, err)
		}
		rep, err := recheck(o, m, done, partial)
		if err != nil || rep.Status != "" {
			return rep, err
		}
		warnings = rep.Warnings
	} else if !errors.Is(err, fs.ErrNotExist) {
		return CopyReport{}, fmt.Errorf("reading completion marker %s: %w", done, err)
	}
	entries, err := os.ReadDir(o.To)
	if err != nil {
		return CopyReport{}, fmt.Errorf("reading destination %s: %w", o.To, err)
	}
	ours := false
	var others []string
	for _, e := range entries {
		switch {
		case e.Name() == filepath.Base(partial):
			ours = true
		default:
			others = append(others, e.Name())
		}
	}
	if len(others) > 0 && !ours {
		if len(others) > 5 {
			others = others[:5]
		}
		return CopyReport{Status: StatusPopulated, Entries: others}, nil
	}
	// An interrupted copy of ours: start again from an empty destination.
	for _, name := range others {
		if err := removeTree(filepath.Join(o.To, name)); err != nil {
			return CopyReport{}, fmt.Errorf("emptying the interrupted copy in %s: %w", o.To, err)
		}
	}
	if err := writeFileSync(partial, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n")); err != nil {
		return CopyReport{}, fmt.Errorf("writing in-progress marker: %w", err)
	}
	c := &copier{links: map[inode]string{}}
	src := newTally()
	if err := c.copyDir(o.From, o.To, "", src); err != nil {
		return CopyReport{}, err
	}
	dst, err := TreeChecksum(o.To)
	if err != nil {
		return CopyReport{}, fmt.Errorf("hashing the copy: %w", err)
	}
	if got := src.result(); got != dst {
		return CopyReport{}, fmt.Errorf("verifying the copy: source has %d entries, %d bytes, %s; destination has %d entries, %d bytes, %s (the in-progress marker is kept: the next run starts over)",
			got.Files, got.Bytes, got.Checksum, dst.Files, dst.Bytes, dst.Checksum)
	}
	m := Marker{From: o.FromName, To: o.ToName, Files: dst.Files, Bytes: dst.Bytes, Checksum: dst.Checksum, CompletedAt: time.Now().UTC()}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return CopyReport{}, err
	}
	tmp := done + ".tmp"
	if err := writeFileSync(tmp, append(data, '\n')); err != nil {
		return CopyReport{}, fmt.Errorf("writing completion marker: %w", err)
	}
	if err := os.Rename(tmp, done); err != nil {
		return CopyReport{}, fmt.Errorf("writing completion marker: %w", err)
	}
	if err := os.Remove(partial); err != nil {
		return CopyReport{}, fmt.Errorf("removing in-progress marker: %w", err)
	}
	if err := syncDir(o.To); err != nil {
		return CopyReport{}, err
	}
	return CopyReport{Status: StatusCopied, Marker: m, Warnings: append(warnings, c.warnings...)}, nil
}

// recheck decides what a completion marker m means now. The copy is
// current while the source still has m's checksum: skipped. A source
// written since (the old revision ran again after a rolled-back upgrade)
// makes the copy stale: when the destination is still exactly the copy it
// is copied again (an empty Status tells CopyTree to go on, the in-progress
// marker in place); when both changed, StatusDiverged, and nothing is
// touched.
func recheck(o CopyOptions, m Marker, done, partial string) (CopyReport, error) {
	src, err := TreeChecksum(o.From)
	if err != nil {
		return CopyReport{}, fmt.Errorf("hashing the source: %w", err)
	}
	if src.Checksum == m.Checksum {
		// Killed between the two markers: the copy was verified.
		_ = os.Remove(partial)
		return CopyReport{Status: StatusSkipped, Marker: m}, nil
	}
	dst, err := TreeChecksum(o.To)
	if err != nil {
		return CopyReport{}, fmt.Errorf("hashing the destination: %w", err)
	}
	if dst.Checksum != m.Checksum {
		return CopyReport{Status: StatusDiverged, Marker: m}, nil
	}
	// Mark the destination as ours before dropping the completion marker,
	// so a crash in between leaves a copy to redo, not someone's data.
	if err := writeFileSync(partial, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n")); err != nil {
		return CopyReport{}, fmt.Errorf("writing in-progress marker: %w", err)
	}
	if err := os.Remove(done); err != nil {
		return CopyReport{}, fmt.Errorf("removing the stale completion marker: %w", err)
	}
	return CopyReport{Warnings: []string{fmt.Sprintf("%s changed since it was copied at %s and %s did not: copied again",
		o.FromName, m.CompletedAt.Format(time.RFC3339), o.ToName)}}, nil
}

// Sum is a tree's entry count, byte count and digest.
type Sum struct {
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
	Checksum string `json:"checksum"`
}

// tally accumulates a Sum.
type tally struct {
	files, bytes int64
	h            hash.Hash
}

func newTally() *tally { return &tally{h: sha256.New()} }

func (t *tally) result() Sum {
	return Sum{Files: t.files, Bytes: t.bytes, Checksum: "sha256:" + hex.EncodeToString(t.h.Sum(nil))}
}

// add records one entry: its path, type, permission bits (with setuid,
// setgid, sticky), owner, size and content digest (files) or target
// (symlinks). Times are not part of it: writing the marker changes the
// root's, and directories' change whenever a file is added.
func (t *tally) add(rel string, st *syscall.Stat_t, content string) {
	typ := byte('?')
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		typ = 'f'
		t.bytes += st.Size
	case syscall.S_IFDIR:
		typ = 'd'
	case syscall.S_IFLNK:
		typ = 'l'
	case syscall.S_IFIFO:
		typ = 'p'
	case syscall.S_IFCHR:
		typ = 'c'
	case syscall.S_IFBLK:
		typ = 'b'
	}
	size := int64(0)
	if typ == 'f' {
		size = st.Size
	}
	if rel != "" {
		t.files++
	}
	fmt.Fprintf(t.h, "%q %c %o %d %d %d %s\n", rel, typ, st.Mode&0o7777, st.Uid, st.Gid, size, content)
}

// TreeChecksum walks dir (without following symlinks), in name order, and
// returns its Sum. Outpost's markers in the root and sockets are left out.
func TreeChecksum(dir string) (Sum, error) {
	t := newTally()
	err := walk(dir, "", func(path, rel string, st *syscall.Stat_t) error {
		content := ""
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", path, err)
			}
			content = hex.EncodeToString(h.Sum(nil))
		case syscall.S_IFLNK:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			content = target
		case syscall.S_IFSOCK:
			return nil
		}
		t.add(rel, st, content)
		return nil
	})
	if err != nil {
		return Sum{}, err
	}
	return t.result(), nil
}

// walk calls fn for dir and, in name order, every entry below it.
func walk(path, rel string, fn func(path, rel string, st *syscall.Stat_t) error) error {
	st, err := lstat(path)
	if err != nil {
		return err
	}
	if err := fn(path, rel, st); err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return nil
	}
	names, err := readNames(path, rel == "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := walk(filepath.Join(path, n), filepath.Join(rel, n), fn); err != nil {
			return err
		}
	}
	return nil
}

// readNames lists a directory's entries sorted, leaving out markers in the
// root.
func readNames(dir string, root bool) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", dir, err)
	}
	out := names[:0]
	for _, n := range names {
		if root && isMarker(n) {
			continue
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func lstat(path string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return nil, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	return &st, nil
}

type inode struct{ dev, ino uint64 }

// copier copies entries, remembering hard-linked files.
type copier struct {
	links    map[inode]string
	warnings []string
}

// copyDir copies the directory src's entries into the existing directory
// dst, then gives dst src's owner, mode and times.
func (c *copier) copyDir(src, dst, rel string, t *tally) error {
	st, err := lstat(src)
	if err != nil {
		return err
	}
	t.add(rel, st, "")
	names, err := readNames(src, rel == "")
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := c.copyEntry(filepath.Join(src, n), filepath.Join(dst, n), filepath.Join(rel, n), t); err != nil {
			return err
		}
	}
	return setMeta(dst, st, false)
}

func (c *copier) copyEntry(src, dst, rel string, t *tally) error {
	st, err := lstat(src)
	if err != nil {
		return err
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return fmt.Errorf("creating directory %s: %w", rel, err)
		}
		return c.copyDir(src, dst, rel, t)
	case syscall.S_IFREG:
		if st.Nlink > 1 {
			key := inode{uint64(st.Dev), st.Ino}
			if first, ok := c.links[key]; ok {
				if err := os.Link(first, dst); err != nil {
					return fmt.Errorf("linking %s: %w", rel, err)
				}
				sum, err := fileDigest(dst)
				if err != nil {
					return err
				}
				t.add(rel, st, sum)
				return nil
			}
			c.links[key] = dst
		}
		sum, err := copyFile(src, dst, st)
		if err != nil {
			return fmt.Errorf("copying %s: %w", rel, err)
		}
		t.add(rel, st, sum)
		return setMeta(dst, st, false)
	case syscall.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return fmt.Errorf("creating symlink %s: %w", rel, err)
		}
		t.add(rel, st, target)
		return setMeta(dst, st, true)
	case syscall.S_IFIFO, syscall.S_IFCHR, syscall.S_IFBLK:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("creating special file %s: %w (device files cannot be created in a rootless user namespace; remove it from the source volume)", rel, err)
		}
		t.add(rel, st, "")
		return setMeta(dst, st, false)
	case syscall.S_IFSOCK:
		c.warnings = append(c.warnings, "socket "+rel+" not copied (a running program creates it)")
		return nil
	}
	return fmt.Errorf("copying %s: unknown file type %o", rel, st.Mode&syscall.S_IFMT)
}

// copyFile copies a regular file's content and returns its sha256.
func copyFile(src, dst string, st *syscall.Stat_t) (string, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil && n != st.Size {
		err = fmt.Errorf("read %d bytes, the file has %d: is a service still writing the source volume?", n, st.Size)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// setMeta gives path st's owner, then mode (chown clears setuid bits), then
// access and modification times.
func setMeta(path string, st *syscall.Stat_t, link bool) error {
	if err := os.Lchown(path, int(st.Uid), int(st.Gid)); err != nil {
		return fmt.Errorf("setting owner of %s to %d:%d: %w", path, st.Uid, st.Gid, err)
	}
	if !link {
		if err := syscall.Chmod(path, st.Mode&0o7777); err != nil {
			return fmt.Errorf("setting mode of %s: %w", path, err)
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting times of %s: %w", path, err)
	}
	return nil
}

// removeTree removes a copied tree, first making its directories writable:
// the copy gives read-only directories their mode, which stops a
// non-root remover.
func removeTree(path string) error {
	if err := os.RemoveAll(path); err == nil {
		return nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
