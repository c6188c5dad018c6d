package demo

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
)

// EnsureImage makes sure the engine has the demo image for the binary at
// binaryPath (default: the running executable) under tag (default
// DefaultImage), and returns the image ID. When the image already carries
// the binary's digest in LabelBuild nothing is done; otherwise the image
// is built and streamed into eng.LoadImage (no temporary file). The
// binary's digest is cached per path, size and mtime, so repeated calls
// do not re-read it. An image previously under tag keeps existing
// untagged while containers use it.
func EnsureImage(ctx context.Context, eng engine.Engine, tag, binaryPath string, log *slog.Logger) (string, error) {
	if tag == "" {
		tag = DefaultImage
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if binaryPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("locating the outpost binary for the demo image: %w", err)
		}
		binaryPath = exe
	}
	if p, err := filepath.EvalSymlinks(binaryPath); err == nil {
		binaryPath = p
	}
	f, err := os.Open(binaryPath)
	if err != nil {
		return "", fmt.Errorf("opening binary for the demo image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("opening binary for the demo image: %w", err)
	}
	buildID, err := binaryDigest(binaryPath, f, st)
	if err != nil {
		return "", err
	}

	info, err := eng.ImageInspect(ctx, tag)
	switch {
	case err == nil && info.Labels[LabelBuild] == buildID:
		log.Debug("demo image up to date", "image", tag, "id", info.ID)
		return info.ID, nil
	case err != nil && !errors.Is(err, engine.ErrNotFound):
		return "", fmt.Errorf("inspecting demo image %s: %w", tag, err)
	}

	start := time.Now()
	log.Info("building demo image", "image", tag, "binary", binaryPath, "bytes", st.Size())
	img, err := BuildImage(f, st.Size(), ImageOptions{BuildID: buildID, Version: binaryVersion(f)})
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	writeErr := make(chan error, 1)
	go func() {
		err := WriteArchive(pw, img, tag)
		pw.CloseWithError(err)
		writeErr <- err
	}()
	names, loadErr := eng.LoadImage(ctx, pr)
	// Unblock the writer if the engine stopped reading early.
	pr.CloseWithError(errStoppedReading)
	if werr := <-writeErr; werr != nil && !errors.Is(werr, errStoppedReading) {
		// The engine saw a truncated stream; the writer knows why.
		return "", fmt.Errorf("streaming demo image %s: %w", tag, werr)
	}
	if loadErr != nil {
		return "", fmt.Errorf("loading demo image %s: %w", tag, loadErr)
	}

	info, err = eng.ImageInspect(ctx, tag)
	if err != nil {
		return "", fmt.Errorf("inspecting loaded demo image %s: %w", tag, err)
	}
	if got := info.Labels[LabelBuild]; got != buildID {
		return "", fmt.Errorf("loaded demo image %s (names %v) has build %q, want %q", tag, names, got, buildID)
	}
	log.Info("demo image loaded", "image", tag, "id", info.ID, "duration", time.Since(start).Round(time.Millisecond))
	return info.ID, nil
}

// errStoppedReading unblocks the archive writer when LoadImage returns
// before reading everything.
var errStoppedReading = errors.New("engine stopped reading the demo image archive")

// digestCache remembers binary digests by path, keyed also on size and
// mtime so a replaced binary is hashed again.
var digestCache = struct {
	sync.Mutex
	m map[string]cachedDigest
}{m: map[string]cachedDigest{}}

type cachedDigest struct {
	size    int64
	modTime time.Time
	digest  string
}

// binaryDigest returns "sha256:<hex>" of the open file f at path.
func binaryDigest(path string, f *os.File, st os.FileInfo) (string, error) {
	digestCache.Lock()
	c, ok := digestCache.m[path]
	digestCache.Unlock()
	if ok && c.size == st.Size() && c.modTime.Equal(st.ModTime()) {
		return c.digest, nil
	}
	d, err := digestReader(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return "", fmt.Errorf("hashing binary %s: %w", path, err)
	}
	digestCache.Lock()
	digestCache.m[path] = cachedDigest{size: st.Size(), modTime: st.ModTime(), digest: d}
	digestCache.Unlock()
	return d, nil
}

// binaryVersion reads the Go module version recorded in the binary, "" when
// there is none (BuildImage then labels it "dev").
func binaryVersion(r io.ReaderAt) string {
	bi, err := buildinfo.Read(r)
	if err != nil || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return ""
	}
	return bi.Main.Version
}
