package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Format identifies the snapshot layout this package writes and reads.
const Format = "outpost-snapshot/1"

// Files and directories inside a snapshot.
const (
	ManifestFile   = "manifest.json"
	DefinitionFile = "definition.json"
	RevisionFile   = "revision.json"
	hooksDir       = "hooks"
	volumesDir     = "volumes"
	stateDir       = "state"
)

// ErrCorrupt is returned (wrapped) when a snapshot's files do not match its
// manifest: one is missing, has another size or another checksum.
var ErrCorrupt = errors.New("snapshot is corrupt")

// ErrIncomplete is returned (wrapped) for a directory that has no valid
// manifest: a snapshot that was interrupted, or not a snapshot at all.
var ErrIncomplete = errors.New("not a complete outpost snapshot")

// Manifest describes a complete snapshot. It is written last: a snapshot
// directory without one is never treated as complete.
type Manifest struct {
	// Format is always Format.
	Format string `json:"format"`
	// Name is the snapshot's name, also its directory's base name.
	Name string `json:"name"`
	// Appliance is the appliance name.
	Appliance string `json:"appliance"`
	// Version is the vendor's version of the definition.
	Version string `json:"version,omitempty"`
	// Revision is the revision ID on the box that made the snapshot.
	Revision int64 `json:"revision"`
	// SpecHash identifies the definition (definition.json).
	SpecHash string `json:"spec_hash,omitempty"`
	// OutpostVersion is the version of the outpost that wrote it.
	OutpostVersion string `json:"outpost_version,omitempty"`
	// Trigger says what asked for it: manual, schedule, upgrade.
	Trigger string `json:"trigger,omitempty"`
	// Quiesce is the quiesce mode used for services without hooks.
	Quiesce   string    `json:"quiesce"`
	CreatedAt time.Time `json:"created_at"`
	// FinishedAt is when the manifest was written.
	FinishedAt time.Time `json:"finished_at"`
	// Hooks are the backup hooks whose output the snapshot holds.
	Hooks []HookEntry `json:"hooks,omitempty"`
	// Volumes are the named volumes copied.
	Volumes []VolumeEntry `json:"volumes,omitempty"`
	// Files lists every file of the snapshot but the manifest, with its
	// size and checksum, sorted by path.
	Files []FileEntry `json:"files"`
	// Dirs are the directories of the state files (below state/), with
	// their modes, so a restore recreates them as they were.
	Dirs []DirEntry `json:"dirs,omitempty"`
	// Warnings are things the operator should know about the snapshot
	// (a hook skipped because its service was stopped, ...).
	Warnings []string `json:"warnings,omitempty"`
}

// HookEntry is one backup hook's output in a snapshot.
type HookEntry struct {
	Service string `json:"service"`
	// File is the output's path inside the snapshot.
	File    string   `json:"file"`
	Command []string `json:"command"`
	// Restore is the command that loads File back; empty when none.
	Restore []string `json:"restore,omitempty"`
}

// Copy methods of a volume, recorded per volume.
const (
	// CopyStopped: its services without hooks were stopped for the copy.
	CopyStopped = "stopped"
	// CopyPaused: its services without hooks were paused for the copy.
	CopyPaused = "paused"
	// CopyIdle: no service using it was running.
	CopyIdle = "idle"
	// CopyHook: it was copied while in use by services with backup hooks,
	// whose output holds the consistent copy of their data.
	CopyHook = "live-hook"
	// CopyLive: it was copied while in use (quiesce none): the copy may be
	// inconsistent.
	CopyLive = "live"
)

// VolumeEntry is one named volume's contents in a snapshot.
type VolumeEntry struct {
	// Key is the Compose key, Name the Podman volume name.
	Key  string `json:"key"`
	Name string `json:"name"`
	// File is the tar's path inside the snapshot.
	File string `json:"file"`
	// Services mount the volume.
	Services []string `json:"services,omitempty"`
	External bool     `json:"external,omitempty"`
	// Copy is how the copy was made (CopyStopped, CopyPaused, ...).
	Copy string `json:"copy"`
	// HookServices are the services with backup hooks that write to the
	// volume; when they all have restore commands, restore reloads their
	// data from the hook output rather than from this copy.
	HookServices []string `json:"hook_services,omitempty"`
}

// FileEntry is one file of a snapshot.
type FileEntry struct {
	// Path is slash-separated and relative to the snapshot directory.
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Mode is the permission bits a state file had in the state
	// directory (restored with it); 0 for other files.
	Mode uint32 `json:"mode,omitempty"`
}

// DirEntry is a directory of state files.
type DirEntry struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// Size is the total size of the snapshot's files.
func (m *Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// check reports what is wrong with a manifest read from disk.
func (m *Manifest) check() error {
	var problems []string
	if m.Format != Format {
		problems = append(problems, fmt.Sprintf("format %q is not %q (made by a newer outpost?)", m.Format, Format))
	}
	if m.Appliance == "" || m.Name == "" {
		problems = append(problems, "no appliance or name")
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if !localPath(f.Path) {
			problems = append(problems, fmt.Sprintf("file %q is not a path inside the snapshot", f.Path))
		}
		if seen[f.Path] {
			problems = append(problems, fmt.Sprintf("file %q is listed twice", f.Path))
		}
		seen[f.Path] = true
		if len(f.SHA256) != 64 || f.Size < 0 {
			problems = append(problems, fmt.Sprintf("file %q has no valid checksum", f.Path))
		}
	}
	for _, need := range []string{DefinitionFile, RevisionFile} {
		if !seen[need] {
			problems = append(problems, fmt.Sprintf("%s is not listed", need))
		}
	}
	for _, h := range m.Hooks {
		if !seen[h.File] {
			problems = append(problems, fmt.Sprintf("hook output %q of service %s is not listed", h.File, h.Service))
		}
	}
	for _, v := range m.Volumes {
		if !seen[v.File] {
			problems = append(problems, fmt.Sprintf("copy %q of volume %s is not listed", v.File, v.Name))
		}
	}
	for _, d := range m.Dirs {
		if !localPath(d.Path) || !strings.HasPrefix(d.Path, stateDir+"/") {
			problems = append(problems, fmt.Sprintf("directory %q is not a state directory inside the snapshot", d.Path))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// localPath reports whether p is a clean, relative, slash-separated path
// that stays inside the snapshot (no "..", no absolute path).
func localPath(p string) bool {
	return p != "" && p != ManifestFile && path.Clean(p) == p && filepath.IsLocal(filepath.FromSlash(p)) && !strings.Contains(p, `\`)
}

// ReadManifest reads and checks the manifest of the snapshot in dir. It
// fails with ErrIncomplete when there is none or it cannot be used.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: no %s (an interrupted snapshot?): %w", dir, ManifestFile, ErrIncomplete)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the manifest of %s: %w", dir, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: unreadable %s (%v): %w", dir, ManifestFile, err, ErrIncomplete)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: invalid %s: %v: %w", dir, ManifestFile, err, ErrIncomplete)
	}
	return &m, nil
}

// writeManifest writes m as dir's manifest atomically and durably: a temp
// file, fsync, rename, fsync of the directory.
func writeManifest(dir string, m *Manifest) error {
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	if err := m.check(); err != nil {
		return fmt.Errorf("writing the manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the manifest: %w", err)
	}
	tmp := filepath.Join(dir, "."+ManifestFile+".tmp")
	if err := writeFileSync(tmp, append(b, '\n')); err != nil {
		return fmt.Errorf("writing the manifest: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestFile)); err != nil {
		return fmt.Errorf("writing the manifest: %w", err)
	}
	return syncDir(dir)
}

func writeFileSync(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// VerifyProblem is one file that does not match the manifest.
type VerifyProblem struct {
	Path    string `json:"path"`
	Problem string `json:"problem"`
}

// verifyFiles checks every file of m in dir: it exists, is a regular file,
// and has the recorded size and checksum. progress (may be nil) is told
// the bytes read so far. It returns every mismatch, not just the first.
func verifyFiles(dir string, m *Manifest, progress func(done, total int64)) ([]VerifyProblem, error) {
	var problems []VerifyProblem
	total := m.Size()
	var done int64
	for _, f := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, os.ErrNotExist):
			problems = append(problems, VerifyProblem{f.Path, "missing"})
			done += f.Size
			continue
		case err != nil:
			return nil, fmt.Errorf("checking %s: %w", p, err)
		case !fi.Mode().IsRegular():
			problems = append(problems, VerifyProblem{f.Path, "not a regular file"})
			done += f.Size
			continue
		case fi.Size() != f.Size:
			problems = append(problems, VerifyProblem{f.Path, fmt.Sprintf("size %d, manifest says %d (truncated or changed)", fi.Size(), f.Size)})
			done += f.Size
			continue
		}
		sum, _, err := hashFile(p, func(n int64) {
			if progress != nil {
				progress(done+n, total)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		done += f.Size
		if sum != f.SHA256 {
			problems = append(problems, VerifyProblem{f.Path, "checksum differs from the manifest"})
		}
	}
	return problems, nil
}

// hashFile returns the hex sha256 and size of the file at p.
func hashFile(p string, progress func(int64)) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	var w io.Writer = h
	if progress != nil {
		w = &countingWriter{w: h, report: progress}
	}
	n, err := io.CopyBuffer(w, f, make([]byte, 1<<20))
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// countingWriter counts bytes written through it and reports the running
// total at most every reportEvery bytes.
type countingWriter struct {
	w      io.Writer
	n      int64
	last   int64
	report func(int64)
}

const reportEvery = 4 << 20

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.report != nil && c.n-c.last >= reportEvery {
		c.last = c.n
		c.report(c.n)
	}
	return n, err
}

// fileWriter writes one snapshot file, hashing and counting what passes,
// and fsyncs it on Close.
type fileWriter struct {
	rel  string
	f    *os.File
	h    hash.Hash
	n    int64
	last int64
	// report is told the running size every reportEvery bytes.
	report func(int64)
}

func createFile(dir, rel string, report func(int64)) (*fileWriter, error) {
	p := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", p, err)
	}
	return &fileWriter{rel: rel, f: f, h: sha256.New(), report: report}, nil
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if w.report != nil && w.n-w.last >= reportEvery {
		w.last = w.n
		w.report(w.n)
	}
	return n, err
}

// finish fsyncs and closes the file and returns its manifest entry.
func (w *fileWriter) finish() (FileEntry, error) {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return FileEntry{}, fmt.Errorf("writing %s: %w", w.rel, err)
	}
	if err := w.f.Close(); err != nil {
		return FileEntry{}, fmt.Errorf("writing %s: %w", w.rel, err)
	}
	return FileEntry{Path: w.rel, Size: w.n, SHA256: hex.EncodeToString(w.h.Sum(nil))}, nil
}

// abort closes the file; the partial snapshot is removed by the caller.
func (w *fileWriter) abort() { w.f.Close() }
