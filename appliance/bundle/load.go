package bundle

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
)

// ImageEngine is what Load needs from a container engine. engine.Engine
// implements it.
type ImageEngine interface {
	ImageInspect(ctx context.Context, ref string) (engine.ImageInfo, error)
	LoadImage(ctx context.Context, r io.Reader) ([]string, error)
	TagImage(ctx context.Context, id, ref string) error
	RemoveImage(ctx context.Context, id string) error
	ImageStore(ctx context.Context) (engine.ImageStoreInfo, error)
}

var _ ImageEngine = engine.Engine(nil)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Trust holds the keys the bundle must be signed by; required.
	Trust *Trust
	// Progress reports bytes of the bundle file read; nil for none.
	Progress Progress
	// Log receives debug and info messages; nil discards.
	Log *slog.Logger
}

// VerifyResult describes a verified bundle.
type VerifyResult struct {
	// Path is the bundle file.
	Path string `json:"path"`
	// Manifest is the verified manifest.
	Manifest *Manifest `json:"manifest"`
	// KeyID names the key that signed it.
	KeyID string `json:"key_id"`
	// FileSize is the bundle file's size; PayloadSize the entries'
	// uncompressed total.
	FileSize    int64 `json:"file_size"`
	PayloadSize int64 `json:"payload_size"`
	// Duration is the whole run's wall time.
	Duration time.Duration `json:"duration_ns"`
}

// Verify reads the whole bundle once and checks its signature, every
// entry's size and sha256, the entry list (nothing missing, unknown or out
// of order) and entry safety (names, types). It changes nothing.
func Verify(ctx context.Context, path string, opts VerifyOptions) (*VerifyResult, error) {
	s, err := open(path, opts.Trust, opts.Progress, opts.Log)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := s.walk(ctx, func(e *EntryReader) error {
		_, err := io.Copy(io.Discard, e)
		return err
	}); err != nil {
		return nil, s.wrap(err)
	}
	return s.result(), nil
}

// ExtractOptions configure Extract.
type ExtractOptions struct {
	// Trust holds the keys the bundle must be signed by; required.
	Trust *Trust
	// Dir receives the entries as Dir/app/..., Dir/bin/..., plus the
	// manifest and signature; it must not exist, be empty, or hold an
	// earlier extraction of the same bundle. Required.
	Dir string
	// Kinds selects what to extract; default compose and env files.
	// Images are never extracted (Load streams them into the engine).
	Kinds []Kind
	// Progress and Log as in VerifyOptions.
	Progress Progress
	Log      *slog.Logger
}

// ExtractResult describes an extraction.
type ExtractResult struct {
	VerifyResult
	// Dir is where the files are.
	Dir string `json:"dir"`
	// ComposeFiles are the extracted Compose files in merge order
	// (absolute paths), EnvFiles the env-file templates.
	ComposeFiles []string `json:"compose_files,omitempty"`
	EnvFiles     []string `json:"env_files,omitempty"`
	// Outpost and InstallScript are the extracted binary and install.sh,
	// when asked for and present.
	Outpost       string `json:"outpost,omitempty"`
	InstallScript string `json:"install_script,omitempty"`
}

// Extract verifies the whole bundle and writes the chosen kinds of entry
// into Dir. Files go to a staging directory beside Dir first and appear
// under Dir only once every entry has verified: a bad bundle leaves
// nothing behind.
func Extract(ctx context.Context, path string, opts ExtractOptions) (*ExtractResult, error) {
	s, err := open(path, opts.Trust, opts.Progress, opts.Log)
	if err != nil {
		return nil, err
	}
	defer s.close()
	st, err := newStager(opts.Dir, opts.Kinds)
	if err != nil {
		return nil, err
	}
	defer st.discard()
	if err := checkDisk([]diskNeed{{path: opts.Dir, what: "extracted files", bytes: st.size(s.m)}}); err != nil {
		return nil, err
	}
	if err := s.walk(ctx, func(e *EntryReader) error {
		if st.wants(e.Entry.Kind) {
			return st.write(e)
		}
		_, err := io.Copy(io.Discard, e)
		return err
	}); err != nil {
		return nil, s.wrap(err)
	}
	if err := st.commit(s.br.ManifestBytes(), s.br.SignatureBytes()); err != nil {
		return nil, err
	}
	return st.result(s), nil
}

// LoadOptions configure Load.
type LoadOptions struct {
	// Trust holds the keys the bundle must be signed by; required.
	Trust *Trust
	// Engine receives the images; required.
	Engine ImageEngine
	// ExtractDir, when set, receives the Compose and env files (and
	// ExtractKinds) as Extract does, after everything has verified.
	ExtractDir   string
	ExtractKinds []Kind
	// Parallel is how many images Podman imports at once; default 4 (the
	// fastest on the measured 2-CPU machines, see docs/bundles.md).
	Parallel int
	// VerifyFirst holds every image back until the whole bundle has
	// verified, so nothing at all is imported from a bad bundle (slower:
	// no import overlaps the read). By default each image is imported as
	// soon as its own bytes have verified, and a later failure removes
	// the images this load imported.
	VerifyFirst bool
	// Progress and Log as in VerifyOptions.
	Progress Progress
	Log      *slog.Logger
}

// ImageResult is one image of a load.
type ImageResult struct {
	// ID is the image ID; Refs its names.
	ID   string   `json:"id"`
	Refs []string `json:"refs"`
	// Bytes is the archive's size.
	Bytes int64 `json:"bytes"`
	// Retagged lists names moved onto an image that was already present.
	Retagged []string `json:"retagged,omitempty"`
}

// LoadResult describes a load.
type LoadResult struct {
	ExtractResult
	// Loaded are the images imported; Skipped those already present (by
	// ID), whose bytes were still verified.
	Loaded  []ImageResult `json:"loaded"`
	Skipped []ImageResult `json:"skipped"`
	// VerifyDuration is the streaming, verifying pass (Podman receives
	// the archives during it); ImportDuration the imports after it.
	VerifyDuration time.Duration `json:"verify_duration_ns"`
	ImportDuration time.Duration `json:"import_duration_ns"`
}

// Load verifies the bundle and loads its images into the engine in one
// read of the file:
//
//  1. The manifest's signature is checked, then every image is looked up
//     by ID: present ones are skipped (their bytes are still verified).
//  2. Free space is checked for the images' archives and unpacked layers
//     (and extracted files); nothing happens when it is short.
//  3. The file is streamed once. Each missing image's archive goes to
//     Podman's load endpoint as it is read and hashed, except its last
//     holdBack bytes, which Outpost keeps: Podman spools the body and
//     imports only once it is complete, so an image whose bytes do not
//     match is never imported — its request is aborted and Podman drops
//     the spool. By default an image's tail is sent (and Podman imports
//     it, Parallel at a time) as soon as that image's bytes have
//     verified, overlapping the import with reading the rest; with
//     VerifyFirst the tails are sent only once the whole bundle has
//     verified.
//  4. Any failure aborts the pending requests and removes the images this
//     load imported, restoring the names they took: a failed load leaves
//     the engine as it found it, and nothing half-loaded.
//  5. Each image is checked present under its ID, names of skipped images
//     are moved to them, and extracted files are put in place.
func Load(ctx context.Context, path string, opts LoadOptions) (*LoadResult, error) {
	if opts.Engine == nil {
		return nil, errors.New("loading bundle: no container engine")
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	s, err := open(path, opts.Trust, opts.Progress, opts.Log)
	if err != nil {
		return nil, err
	}
	defer s.close()
	eng, m, log := opts.Engine, s.m, s.log

	// 1. What is there already.
	present := map[string]bool{}
	prior := map[string]string{} // ref -> image ID before the load
	var missingBytes, unpacked int64
	for _, img := range m.Images {
		_, err := eng.ImageInspect(ctx, img.ID)
		switch {
		case err == nil:
			present[img.ID] = true
		case errors.Is(err, engine.ErrNotFound):
			e, _ := m.Entry(img.Entry)
			missingBytes += e.Size
			unpacked += img.UnpackedSize
		default:
			return nil, fmt.Errorf("checking for image %s: %w", img.ID, err)
		}
		for _, ref := range img.Refs {
			info, err := eng.ImageInspect(ctx, ref)
			switch {
			case err == nil:
				prior[ref] = imageID(info.ID)
			case !errors.Is(err, engine.ErrNotFound):
				return nil, fmt.Errorf("checking for image %s: %w", ref, err)
			}
		}
	}

	// 2. Free space.
	var st *stager
	if opts.ExtractDir != "" {
		if st, err = newStager(opts.ExtractDir, opts.ExtractKinds); err != nil {
			return nil, err
		}
		defer st.discard()
	}
	if err := loadSpace(ctx, eng, missingBytes, unpacked, st, m); err != nil {
		return nil, err
	}

	// 3. Stream and verify; images go to Podman as they are read, all but
	// their last holdBack bytes.
	var (
		uploads  []*upload
		released []*upload
		wg       sync.WaitGroup
		sem      = make(chan struct{}, opts.Parallel)
		total    int64
	)
	// release completes an upload's body: Podman imports it.
	release := func(u *upload) {
		sem <- struct{}{}
		if err := u.release(); err != nil {
			u.abort(err) // the engine stopped reading; wait() has its error
		}
		released = append(released, u)
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.wait()
			if opts.VerifyFirst {
				s.progress.Add(u.size)
			}
			<-sem
		}()
	}
	// failedImport reports an import that already failed (pipelined mode),
	// so streaming stops early.
	failedImport := func() error {
		for _, u := range released {
			select {
			case r := <-u.result:
				u.result <- r
				if r.err != nil {
					return fmt.Errorf("podman could not import image %s (%s): %v", u.img.ID, strings.Join(u.img.Refs, ", "), r.err)
				}
			default:
			}
		}
		return nil
	}
	err = s.walk(ctx, func(e *EntryReader) error {
		if err := failedImport(); err != nil {
			return err
		}
		switch {
		case e.Entry.Kind == KindImage:
			img, _ := m.ImageByEntry(e.Entry.Name)
			if present[img.ID] {
				_, err := io.Copy(io.Discard, e)
				return err
			}
			u := startUpload(ctx, eng.LoadImage, img, e.Entry.Size)
			uploads = append(uploads, u)
			total += u.size
			if _, err := io.Copy(u, e); err != nil {
				if errors.Is(err, errStoppedReading) {
					r := u.wait()
					return fmt.Errorf("podman refused image %s (%s): %v", img.ID, strings.Join(img.Refs, ", "), r.err)
				}
				return err
			}
			// The image's bytes all matched the signed manifest.
			if !opts.VerifyFirst {
				release(u)
			}
			return nil
		case st != nil && st.wants(e.Entry.Kind):
			return st.write(e)
		default:
			_, err := io.Copy(io.Discard, e)
			return err
		}
	})
	res := &LoadResult{}
	res.VerifyDuration = time.Since(s.start)
	if err != nil {
		for _, u := range uploads {
			u.abort(err) // no-op for released ones
		}
		wg.Wait()
		for _, u := range uploads {
			u.wait()
		}
		// Verified images imported before the failure are taken out again.
		var imported []Image
		for _, u := range released {
			imported = append(imported, u.img)
		}
		s.verifyCheck(ctx, eng, uploads, present)
		if rb := rollback(eng, imported, nil, prior, log); rb != nil {
			return nil, fmt.Errorf("bundle %s: %w; the images it imported before the failure could not all be removed again: %v (remove them with podman rmi)", path, err, rb)
		}
		return nil, s.wrap(err)
	}
	log.Info("bundle verified", "bundle", path, "key", s.br.KeyID(), "entries", len(m.Entries), "duration", res.VerifyDuration.Round(time.Millisecond))

	// 4. Everything verified: complete the remaining uploads; Podman
	// imports.
	t0 := time.Now()
	if opts.VerifyFirst {
		s.progress.Start("importing", total)
		for _, u := range uploads {
			release(u)
		}
	} else if len(released) > 0 {
		s.progress.Start("finishing imports", 0)
	}
	wg.Wait()
	s.progress.Finish()
	res.ImportDuration = time.Since(t0)

	// 5. Check, retag, roll back on failure.
	var failures []string
	var loaded []Image
	for _, u := range uploads {
		r := u.wait()
		if r.err != nil {
			failures = append(failures, fmt.Sprintf("importing %s (%s): %v", u.img.ID, strings.Join(u.img.Refs, ", "), r.err))
		}
		if _, err := eng.ImageInspect(ctx, u.img.ID); err == nil {
			loaded = append(loaded, u.img)
			res.Loaded = append(res.Loaded, ImageResult{ID: u.img.ID, Refs: u.img.Refs, Bytes: u.size})
		} else if r.err == nil {
			failures = append(failures, fmt.Sprintf("podman reported %s loaded as %v but has no image %s: %v", strings.Join(u.img.Refs, ", "), r.names, u.img.ID, err))
		}
	}
	var retagged []string
	if len(failures) == 0 {
		for _, img := range m.Images {
			if !present[img.ID] {
				continue
			}
			e, _ := m.Entry(img.Entry)
			ir := ImageResult{ID: img.ID, Refs: img.Refs, Bytes: e.Size}
			for _, ref := range img.Refs {
				if prior[ref] == img.ID {
					continue
				}
				if err := eng.TagImage(ctx, img.ID, ref); err != nil {
					failures = append(failures, err.Error())
					break
				}
				retagged = append(retagged, ref)
				ir.Retagged = append(ir.Retagged, ref)
			}
			res.Skipped = append(res.Skipped, ir)
		}
	}
	if len(failures) == 0 && st != nil {
		if err := st.commit(s.br.ManifestBytes(), s.br.SignatureBytes()); err != nil {
			failures = append(failures, err.Error())
		}
	}
	if len(failures) > 0 {
		rb := rollback(eng, loaded, retagged, prior, log)
		msg := strings.Join(failures, "; ")
		if rb != nil {
			return nil, fmt.Errorf("loading bundle %s: %s; rolling back also failed: %v", path, msg, rb)
		}
		return nil, fmt.Errorf("loading bundle %s: %s; the images this load imported were removed again, nothing changed", path, msg)
	}
	if st != nil {
		res.ExtractResult = *st.result(s)
	} else {
		res.VerifyResult = *s.result()
	}
	res.Duration = time.Since(s.start)
	log.Info("bundle loaded", "bundle", path, "loaded", len(res.Loaded), "skipped", len(res.Skipped), "duration", res.Duration.Round(time.Millisecond))
	return res, nil
}

// loadSpace checks free space for a load: the archives are spooled by
// Podman's API ($TMPDIR of the service) and staged again as blobs (its
// image_copy_tmp_dir, /var/tmp by default), the layers unpacked into the
// graph root, and extracted files written to the extraction directory.
func loadSpace(ctx context.Context, eng ImageEngine, archives, unpacked int64, st *stager, m *Manifest) error {
	var needs []diskNeed
	if archives > 0 {
		store, err := eng.ImageStore(ctx)
		if err != nil {
			return err
		}
		copyTmp := store.CopyTmpDir
		if copyTmp == "" {
			copyTmp = "/var/tmp"
		}
		if _, err := os.Stat(store.GraphRoot); err != nil && store.Free > 0 {
			// A remote engine: trust its own figure for the graph root.
			if uint64(unpacked) > store.Free {
				return fmt.Errorf("%w: podman's image storage (%s) has %s free, the images need %s; free space there, then retry — nothing was changed",
					ErrNoSpace, store.GraphRoot, HumanBytes(int64(store.Free)), HumanBytes(unpacked))
			}
		} else {
			needs = append(needs, diskNeed{path: store.GraphRoot, what: "unpacked image layers", bytes: unpacked})
		}
		needs = append(needs,
			diskNeed{path: os.TempDir(), what: "image archives spooled by podman's API", bytes: archives},
			diskNeed{path: copyTmp, what: "image blobs staged by podman", bytes: archives})
	}
	if st != nil {
		needs = append(needs, diskNeed{path: st.dir, what: "extracted files", bytes: st.size(m)})
	}
	return checkDisk(needs)
}

// verifyCheck makes sure an aborted load left no image behind: an engine
// that imported a body despite the abort would be a bug worth knowing.
func (s *session) verifyCheck(ctx context.Context, eng ImageEngine, uploads []*upload, present map[string]bool) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for _, u := range uploads {
		if present[u.img.ID] {
			continue
		}
		if _, err := eng.ImageInspect(cctx, u.img.ID); err == nil {
			s.log.Error("aborted image import left an image behind; removing it", "id", u.img.ID)
			if err := eng.RemoveImage(cctx, u.img.ID); err != nil {
				s.log.Error("removing image left by an aborted import", "id", u.img.ID, "err", err)
			}
		}
	}
}

// rollback removes the images this load imported and gives the names they
// took back to the images that had them.
func rollback(eng ImageEngine, loaded []Image, retagged []string, prior map[string]string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	moved := map[string]bool{}
	for _, img := range loaded {
		if err := eng.RemoveImage(ctx, img.ID); err != nil && !errors.Is(err, engine.ErrNotFound) {
			errs = append(errs, err)
		}
		for _, r := range img.Refs {
			moved[r] = true
		}
	}
	for _, r := range retagged {
		moved[r] = true
	}
	for ref := range moved {
		old, ok := prior[ref]
		if !ok {
			continue
		}
		if err := eng.TagImage(ctx, old, ref); err != nil && !errors.Is(err, engine.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		log.Error("rolling back a failed bundle load", "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// session is one pass over a bundle file.
type session struct {
	path     string
	f        *os.File
	size     int64
	br       *Reader
	m        *Manifest
	progress Progress
	log      *slog.Logger
	start    time.Time
}

// open opens the file and checks the manifest and signature.
func open(path string, trust *Trust, p Progress, log *slog.Logger) (*session, error) {
	if p == nil {
		p = NoProgress()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &session{path: path, progress: p, log: log, start: time.Now()}
	f, err := openFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	s.f, s.size = f, fi.Size()
	p.Start("verifying", s.size)
	br, err := NewReader(bufio.NewReaderSize(&progressReader{r: f, p: p}, 1<<20), ReaderOptions{Trust: trust})
	if err != nil {
		f.Close()
		p.Finish()
		return nil, s.wrap(err)
	}
	s.br, s.m = br, br.Manifest()
	return s, nil
}

// Stdin is the path that names standard input: a bundle piped in (as
// install hands one to the service user, who may not open the file).
const Stdin = "-"

func openFile(path string) (*os.File, error) {
	if path == Stdin {
		return os.Stdin, nil
	}
	return os.Open(path)
}

func (s *session) close() {
	if s.br != nil {
		s.br.Close()
	}
	s.f.Close()
}

// wrap names the bundle in an error and says what to do.
func (s *session) wrap(err error) error {
	hint := ""
	switch {
	case errors.Is(err, ErrSignature):
		hint = "; nothing was changed"
	case errors.Is(err, ErrCorrupt), errors.Is(err, ErrTruncated), errors.Is(err, ErrUnexpectedEntry), errors.Is(err, ErrUnsafePath):
		hint = "; the file is damaged or was tampered with: get a fresh copy from the vendor (compare its sha256) — nothing was changed"
	case errors.Is(err, ErrFormat):
		hint = "; nothing was changed"
	}
	return fmt.Errorf("bundle %s: %w%s", s.path, err, hint)
}

// walk hands every entry to h, in order, and finishes the progress step.
func (s *session) walk(ctx context.Context, h func(*EntryReader) error) error {
	defer s.progress.Finish()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e, err := s.br.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := h(e); err != nil {
			return err
		}
	}
}

func (s *session) result() *VerifyResult {
	return &VerifyResult{Path: s.path, Manifest: s.m, KeyID: s.br.KeyID(), FileSize: s.size, PayloadSize: s.m.TotalSize(), Duration: time.Since(s.start)}
}

// stager writes extracted entries into a staging directory beside the
// target and moves it into place on commit.
type stager struct {
	dir, staging string
	kinds        map[Kind]bool
}

// markerName is the copy of the manifest an extraction directory holds;
// it identifies the directory as an extraction of that bundle.
const markerName = ManifestName

func newStager(dir string, kinds []Kind) (*stager, error) {
	if dir == "" {
		return nil, errors.New("extracting bundle: no target directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if len(kinds) == 0 {
		kinds = []Kind{KindCompose, KindEnv}
	}
	st := &stager{dir: abs, kinds: map[Kind]bool{}}
	for _, k := range kinds {
		if k == KindImage {
			return nil, errors.New("extracting bundle: images are loaded into podman, not extracted")
		}
		if _, ok := kindDirs[k]; !ok {
			return nil, fmt.Errorf("extracting bundle: unknown kind %q", k)
		}
		st.kinds[k] = true
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Dir(abs), err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	st.staging = abs + ".partial-" + hex.EncodeToString(rnd[:])
	if err := os.Mkdir(st.staging, 0o755); err != nil {
		return nil, fmt.Errorf("creating staging directory: %w", err)
	}
	return st, nil
}

func (st *stager) wants(k Kind) bool { return st.kinds[k] }

func (st *stager) size(m *Manifest) int64 {
	var n int64
	for _, e := range m.Entries {
		if st.kinds[e.Kind] {
			n += e.Size
		}
	}
	return n
}

// write extracts one entry. Its name was checked (SafeName) before the
// reader returned it; O_EXCL|O_NOFOLLOW guard the staging directory
// anyway.
func (st *stager) write(e *EntryReader) error {
	if err := SafeName(e.Entry.Name); err != nil {
		return err
	}
	p := filepath.Join(st.staging, filepath.FromSlash(e.Entry.Name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if e.Entry.Executable {
		mode = 0o755
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, mode)
	if err != nil {
		return fmt.Errorf("extracting %s: %w", e.Entry.Name, err)
	}
	if _, err := io.Copy(f, e); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("extracting %s: %w", e.Entry.Name, err)
	}
	if e.Entry.Kind == KindOutpost {
		// install.sh verifies the binary against this file.
		sum := e.Entry.SHA256 + "  " + filepath.Base(p) + "\n"
		if err := os.WriteFile(p+".sha256", []byte(sum), 0o644); err != nil {
			return fmt.Errorf("writing %s.sha256: %w", e.Entry.Name, err)
		}
	}
	return nil
}

// commit writes the manifest and signature beside the files and moves the
// staging directory to the target, replacing an earlier extraction of the
// same bundle.
func (st *stager) commit(manifest, sig []byte) error {
	if err := os.WriteFile(filepath.Join(st.staging, ManifestName), manifest, 0o644); err != nil {
		return fmt.Errorf("writing manifest copy: %w", err)
	}
	if err := os.WriteFile(filepath.Join(st.staging, SignatureName), sig, 0o644); err != nil {
		return fmt.Errorf("writing signature copy: %w", err)
	}
	if old, err := os.ReadFile(filepath.Join(st.dir, markerName)); err == nil && bytes.Equal(old, manifest) {
		if err := os.RemoveAll(st.dir); err != nil {
			return fmt.Errorf("replacing earlier extraction %s: %w", st.dir, err)
		}
	} else if ents, err := os.ReadDir(st.dir); err == nil {
		if len(ents) > 0 {
			return fmt.Errorf("%s exists and holds something other than this bundle; choose another directory", st.dir)
		}
		if err := os.Remove(st.dir); err != nil {
			return err
		}
	}
	if err := os.Rename(st.staging, st.dir); err != nil {
		return fmt.Errorf("moving extracted files into %s: %w", st.dir, err)
	}
	st.staging = ""
	return nil
}

func (st *stager) discard() {
	if st != nil && st.staging != "" {
		os.RemoveAll(st.staging)
	}
}

func (st *stager) result(s *session) *ExtractResult {
	r := &ExtractResult{VerifyResult: *s.result(), Dir: st.dir}
	abs := func(n string) string { return filepath.Join(st.dir, filepath.FromSlash(n)) }
	for _, n := range s.m.ComposeFiles {
		if st.kinds[KindCompose] {
			r.ComposeFiles = append(r.ComposeFiles, abs(n))
		}
	}
	for _, n := range s.m.EnvFiles {
		if st.kinds[KindEnv] {
			r.EnvFiles = append(r.EnvFiles, abs(n))
		}
	}
	for _, e := range s.m.Entries {
		switch {
		case e.Kind == KindOutpost && st.kinds[KindOutpost]:
			r.Outpost = abs(e.Name)
		case e.Kind == KindInstaller && st.kinds[KindInstaller]:
			r.InstallScript = abs(e.Name)
		}
	}
	return r
}
