package bundle

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/outpostdev/outpost/appliance/engine"
)

// ImageSaver is what Build needs from a container engine to take images
// from its local storage. engine.Engine implements it.
type ImageSaver interface {
	ImageInspect(ctx context.Context, ref string) (engine.ImageInfo, error)
	SaveImage(ctx context.Context, ref string, w io.Writer) error
}

// ImageRef is one image the appliance uses.
type ImageRef struct {
	// Ref is the reference as the Compose file writes it.
	Ref string
	// Services are the services (and jobs) using it.
	Services []string
}

// BuildOptions configure Build.
type BuildOptions struct {
	// Appliance and Version name the appliance (from the definition).
	Appliance string
	Version   string
	// ComposeFiles are the Compose files in merge order; required. They
	// are copied byte for byte into app/ under their base names, which
	// must differ.
	ComposeFiles []string
	// EnvFiles are env-file templates copied into app/ as well.
	EnvFiles []string
	// Images are the images the definition uses; each must be found in
	// Sources or, failing that, in Engine's local storage.
	Images []ImageRef
	// Sources are image sources searched before the engine, each a path
	// to a docker-archive or oci-archive file or an OCI layout directory,
	// or "REF=PATH" to take REF from that source (needed when the source
	// does not name its image, e.g. an OCI layout tagged only "1.2.0").
	Sources []string
	// Engine provides images from local storage; nil means Sources only.
	Engine ImageSaver
	// Builds are images to build from Containerfiles first (into the
	// engine's storage, through Builder), e.g. the vendor's own images.
	Builds []ImageBuild
	// BuildArgs are build arguments for every build (VERSION,
	// INSTALL_CJK_FONTS...).
	BuildArgs map[string]string
	// GitTags tags each built image by its context's git ref too
	// (<branch>, sha-<7 hex>, the exact tag) and sets VERSION from it
	// unless BuildArgs does.
	GitTags bool
	// Builder builds Builds; engine.Engine implements it.
	Builder ImageBuilder
	// BuildLog receives the builds' output; nil discards it.
	BuildLog io.Writer
	// Outpost is the outpost binary to include ("" for none).
	Outpost string
	// OutpostVersion is recorded in the manifest.
	OutpostVersion string
	// InstallScript is install.sh to include ("" for none).
	InstallScript string
	// SignKey signs the manifest; required.
	SignKey ed25519.PrivateKey
	// Output is the bundle file to write; it appears only when complete.
	Output string
	// TmpDir holds image archives while building (up to twice the
	// images' size when they come from the engine, which exports them
	// first); default: Output's directory.
	TmpDir string
	// Created is recorded as the build time and used as every entry's
	// modification time; zero records none (reproducible by default).
	Created time.Time
	// Platform is the "os/arch" every image must be for; default
	// "linux/" + runtime.GOARCH. Indexes in OCI sources are resolved to it.
	Platform string
	// Progress reports bytes written; nil for none.
	Progress Progress
	// Log receives debug and info messages; nil discards.
	Log *slog.Logger
}

// BuildResult describes a written bundle.
type BuildResult struct {
	// Path is the bundle file.
	Path string `json:"path"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the file's sha256 (for publishing next to it).
	SHA256 string `json:"sha256"`
	// KeyID names the signing key.
	KeyID string `json:"key_id"`
	// Manifest is the signed manifest.
	Manifest *Manifest `json:"manifest"`
	// Duration is how long building took.
	Duration time.Duration `json:"duration_ns"`
}

// fileEntry is an entry copied from a file on disk.
type fileEntry struct {
	Entry
	path string
}

// Build collects the definition's files and images and writes one signed
// bundle (see the package documentation for the format). Images are taken
// from Sources first, then from the engine's local storage, pinned by
// image ID, and re-archived canonically; the same inputs give the same
// bytes.
func Build(ctx context.Context, opts BuildOptions) (*BuildResult, error) {
	start := time.Now()
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	log := opts.Log
	tmp, err := os.MkdirTemp(opts.TmpDir, ".outpost-bundle-build-")
	if err != nil {
		return nil, fmt.Errorf("creating build directory (set --tmp-dir to a filesystem with room for the images): %w", err)
	}
	defer os.RemoveAll(tmp)

	m := &Manifest{Format: Format, Appliance: opts.Appliance, Version: opts.Version, OutpostVersion: opts.OutpostVersion}
	if !opts.Created.IsZero() {
		m.Created = opts.Created.UTC().Format(time.RFC3339)
	}
	var files []fileEntry
	addFile := func(p string, k Kind, name string, exec bool) error {
		sum, size, err := hashFile(p)
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		files = append(files, fileEntry{Entry: Entry{Name: name, Kind: k, Size: size, SHA256: sum, Executable: exec}, path: p})
		return nil
	}
	seen := map[string]string{}
	for _, group := range []struct {
		paths []string
		kind  Kind
		list  *[]string
	}{{opts.ComposeFiles, KindCompose, &m.ComposeFiles}, {opts.EnvFiles, KindEnv, &m.EnvFiles}} {
		for _, p := range group.paths {
			base := filepath.Base(p)
			name := "app/" + base
			if prev, dup := seen[name]; dup {
				return nil, fmt.Errorf("%s and %s have the same file name; a bundle keeps them side by side in app/, so rename one", prev, p)
			}
			if err := ValidEntryName(name, group.kind); err != nil {
				return nil, fmt.Errorf("%s cannot go into a bundle: %w (rename it)", p, err)
			}
			seen[name] = p
			if err := addFile(p, group.kind, name, false); err != nil {
				return nil, err
			}
			*group.list = append(*group.list, name)
		}
	}
	if opts.InstallScript != "" {
		if err := addFile(opts.InstallScript, KindInstaller, "bin/install.sh", true); err != nil {
			return nil, err
		}
	}
	if opts.Outpost != "" {
		if err := addFile(opts.Outpost, KindOutpost, "bin/outpost", true); err != nil {
			return nil, err
		}
	}

	if err := buildImages(ctx, opts); err != nil {
		return nil, err
	}
	images, closers, err := resolveImages(ctx, opts, tmp)
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	for _, ri := range images {
		hexID := strings.TrimPrefix(ri.src.id, "sha256:")
		name := "images/" + hexID + ".tar"
		p := filepath.Join(tmp, hexID+".tar")
		t0 := time.Now()
		desc, sum, size, err := writeArchiveFile(p, ri, opts.Platform, tmp)
		if err != nil {
			return nil, fmt.Errorf("archiving image %s: %w", strings.Join(ri.refs, ", "), err)
		}
		desc.Entry, desc.Services, desc.RepoDigests = name, ri.services, ri.src.repoDigests
		m.Images = append(m.Images, desc)
		files = append(files, fileEntry{Entry: Entry{Name: name, Kind: KindImage, Size: size, SHA256: sum}, path: p})
		log.Info("image archived", "image", ri.refs[0], "id", ri.src.id, "bytes", size, "source", ri.src.where, "duration", time.Since(t0).Round(time.Millisecond))
	}
	for _, f := range files {
		m.Entries = append(m.Entries, f.Entry)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("building manifest: %w", err)
	}
	raw, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	sig, err := Sign(raw, opts.SignKey)
	if err != nil {
		return nil, err
	}
	res := &BuildResult{Path: opts.Output, Manifest: m, KeyID: KeyID(opts.SignKey.Public().(ed25519.PublicKey))}
	if res.Size, res.SHA256, err = writeBundle(ctx, opts, raw, sig, files); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

func (o *BuildOptions) defaults() error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = NoProgress()
	}
	if o.Platform == "" {
		o.Platform = "linux/" + runtime.GOARCH
	}
	var problems []string
	if len(o.SignKey) != ed25519.PrivateKeySize {
		problems = append(problems, "no signing key: pass --sign-key FILE (create one with `outpost bundle keygen`)")
	}
	if o.Output == "" {
		problems = append(problems, "no output file: pass -o FILE")
	}
	if len(o.ComposeFiles) == 0 {
		problems = append(problems, "no Compose file: pass -f FILE")
	}
	if o.Appliance == "" {
		problems = append(problems, "no appliance name")
	}
	if len(problems) > 0 {
		return errors.New("bundle build: " + strings.Join(problems, "; "))
	}
	if o.TmpDir == "" {
		o.TmpDir = filepath.Dir(o.Output)
	}
	return nil
}

// resolvedImage is one distinct image (by ID) with every reference and
// service using it.
type resolvedImage struct {
	src      *srcImage
	refs     []string
	services []string
}

// resolveImages finds every image; it reports all missing ones at once.
func resolveImages(ctx context.Context, opts BuildOptions, tmp string) ([]*resolvedImage, []io.Closer, error) {
	var closers []io.Closer
	type found struct {
		img      *srcImage
		explicit string // normalised ref when given as REF=PATH
	}
	var pool []found
	for _, s := range opts.Sources {
		ref, p := "", s
		if _, err := os.Stat(s); err != nil {
			if k, v, ok := strings.Cut(s, "="); ok {
				ref, p = NormalizeRef(k), v
			}
		}
		imgs, c, err := openSource(p, opts.Platform)
		if err != nil {
			return nil, closers, err
		}
		closers = append(closers, c)
		if ref != "" && len(imgs) != 1 {
			return nil, closers, fmt.Errorf("image source %s holds %d images; REF=PATH needs exactly one", p, len(imgs))
		}
		for _, img := range imgs {
			pool = append(pool, found{img: img, explicit: ref})
		}
	}
	byID := map[string]*resolvedImage{}
	var order []string
	var missing []string
	saved := 0
	for _, want := range opts.Images {
		norm := NormalizeRef(want.Ref)
		var img *srcImage
		for _, f := range pool {
			if f.explicit == norm {
				img = f.img
				break
			}
		}
		if img == nil {
			for _, f := range pool {
				for _, n := range f.img.names {
					if n == norm {
						img = f.img
					}
				}
				if img != nil {
					break
				}
			}
		}
		if img == nil {
			if ri, ok := byID[refOwner(byID, norm)]; ok {
				img = ri.src
			}
		}
		if img == nil && opts.Engine != nil {
			info, err := opts.Engine.ImageInspect(ctx, want.Ref)
			switch {
			case errors.Is(err, engine.ErrNotFound):
			case err != nil:
				return nil, closers, fmt.Errorf("looking up %s in podman's storage: %w", want.Ref, err)
			case byID[imageID(info.ID)] != nil:
				img = byID[imageID(info.ID)].src
			default:
				img, err = fromEngine(ctx, opts.Engine, want.Ref, info, tmp, saved, &closers)
				saved++
				if err != nil {
					return nil, closers, err
				}
			}
		}
		if img == nil {
			missing = append(missing, fmt.Sprintf("%s (services %s)", want.Ref, strings.Join(want.Services, ", ")))
			continue
		}
		ri, ok := byID[img.id]
		if !ok {
			ri = &resolvedImage{src: img}
			byID[img.id] = ri
			order = append(order, img.id)
		}
		if !strings.Contains(norm, "@") {
			// A digest reference cannot be tagged; the image keeps its
			// other names and is found by ID.
			ri.refs = append(ri.refs, norm)
		}
		ri.services = append(ri.services, want.Services...)
	}
	if len(missing) > 0 {
		where := "podman's local storage"
		if opts.Engine == nil {
			where = "the given sources"
		} else if len(opts.Sources) > 0 {
			where = "the given sources or podman's local storage"
		}
		return nil, closers, fmt.Errorf("images not found in %s: %s; build or load them first, or pass --from ARCHIVE|DIR", where, strings.Join(missing, "; "))
	}
	sort.Strings(order)
	// Names the images carry besides the Compose references are kept
	// only where they are unambiguous: a name the definition uses for
	// another image, or one two images carry, is left out.
	claims := map[string]int{}
	for _, id := range order {
		ri := byID[id]
		for _, n := range sortedUnique(append(append([]string(nil), ri.refs...), ri.src.names...)) {
			claims[n]++
		}
	}
	var out []*resolvedImage
	for _, id := range order {
		ri := byID[id]
		for _, n := range ri.src.names {
			if claims[n] == 1 {
				ri.refs = append(ri.refs, n)
			}
		}
		ri.refs = sortedUnique(ri.refs)
		ri.services = sortedUnique(ri.services)
		if len(ri.refs) == 0 {
			return nil, closers, fmt.Errorf("image %s has no name to load it under; refer to it by repository:tag in the Compose file", id)
		}
		out = append(out, ri)
	}
	return out, closers, nil
}

// refOwner returns the ID of the resolved image already carrying ref.
func refOwner(byID map[string]*resolvedImage, ref string) string {
	for id, ri := range byID {
		for _, r := range ri.refs {
			if r == ref {
				return id
			}
		}
	}
	return ""
}

// fromEngine exports ref from the engine's storage into tmp and opens it.
func fromEngine(ctx context.Context, eng ImageSaver, ref string, info engine.ImageInfo, tmp string, n int, closers *[]io.Closer) (*srcImage, error) {
	p := filepath.Join(tmp, fmt.Sprintf("podman-%d.tar", n))
	f, err := os.Create(p)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	// Save by ID: a tag could move between inspect and save.
	err = eng.SaveImage(ctx, info.ID, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("exporting %s from podman: %w", ref, err)
	}
	t, err := openTarFS(p)
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, t)
	imgs, err := dockerArchiveImages(t, "podman storage ("+ref+")")
	if err != nil {
		return nil, err
	}
	if len(imgs) != 1 {
		return nil, fmt.Errorf("podman exported %d images for %s, want 1", len(imgs), ref)
	}
	img := imgs[0]
	if want := imageID(info.ID); img.id != want {
		return nil, fmt.Errorf("podman exported image %s for %s, whose ID is %s", img.id, ref, want)
	}
	img.names = nil
	for _, n := range info.Names {
		img.names = append(img.names, NormalizeRef(n))
	}
	if info.Digest != "" {
		img.repoDigests = []string{info.Digest}
	}
	return img, nil
}

// imageID returns a Podman image ID in "sha256:<hex>" form.
func imageID(id string) string {
	return "sha256:" + strings.TrimPrefix(id, "sha256:")
}

// writeArchiveFile writes one image's canonical archive to p and returns
// its description, sha256 and size.
func writeArchiveFile(p string, ri *resolvedImage, platform, tmp string) (Image, string, int64, error) {
	f, err := os.Create(p)
	if err != nil {
		return Image{}, "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{}
	bw := bufio.NewWriterSize(io.MultiWriter(f, h, cw), 1<<20)
	desc, err := writeImageArchive(bw, ri.src, ri.refs, platform, tmp)
	if err != nil {
		return Image{}, "", 0, err
	}
	if err := bw.Flush(); err != nil {
		return Image{}, "", 0, err
	}
	if err := f.Close(); err != nil {
		return Image{}, "", 0, err
	}
	return desc, hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct{ n int64 }

// Write implements io.Writer.
func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// hashFile returns a file's sha256 and size.
func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is not a regular file", p)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// encoderConcurrency is fixed (not GOMAXPROCS) so output does not depend
// on the building machine.
const encoderConcurrency = 4

// writeBundle writes the bundle file: zstd(tar(manifest, signature,
// entries...)). It goes to a temporary name beside Output and is renamed
// once complete and synced.
func writeBundle(ctx context.Context, opts BuildOptions, manifest, sig []byte, files []fileEntry) (int64, string, error) {
	partial := opts.Output + ".partial"
	out, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, "", fmt.Errorf("creating %s: %w", partial, err)
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(partial)
		}
	}()
	fileHash := sha256.New()
	cw := &countWriter{}
	bw := bufio.NewWriterSize(io.MultiWriter(out, fileHash, cw), 1<<20)
	zw, err := zstd.NewWriter(bw,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(encoderConcurrency),
		zstd.WithEncoderCRC(true),
	)
	if err != nil {
		return 0, "", fmt.Errorf("starting zstd encoder: %w", err)
	}
	defer zw.Close()
	tw := tar.NewWriter(zw)
	mtime := epoch
	if !opts.Created.IsZero() {
		mtime = opts.Created.UTC().Truncate(time.Second)
	}
	for _, head := range []struct {
		name string
		data []byte
	}{{ManifestName, manifest}, {SignatureName, sig}} {
		if err := tw.WriteHeader(memberHeader(head.name, int64(len(head.data)), 0o644, mtime)); err != nil {
			return 0, "", fmt.Errorf("writing %s: %w", head.name, err)
		}
		if _, err := tw.Write(head.data); err != nil {
			return 0, "", fmt.Errorf("writing %s: %w", head.name, err)
		}
	}
	var total int64
	for _, f := range files {
		total += f.Size
	}
	opts.Progress.Start("writing bundle", total)
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return 0, "", err
		}
		if err := copyEntry(tw, f, mtime, opts.Progress); err != nil {
			return 0, "", err
		}
	}
	opts.Progress.Finish()
	if err := tw.Close(); err != nil {
		return 0, "", fmt.Errorf("finishing tar stream: %w", err)
	}
	if err := zw.Close(); err != nil {
		return 0, "", fmt.Errorf("finishing zstd stream: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, "", fmt.Errorf("writing %s: %w", partial, err)
	}
	if err := out.Sync(); err != nil {
		return 0, "", fmt.Errorf("syncing %s: %w", partial, err)
	}
	if err := out.Close(); err != nil {
		return 0, "", fmt.Errorf("closing %s: %w", partial, err)
	}
	if err := os.Rename(partial, opts.Output); err != nil {
		return 0, "", fmt.Errorf("renaming %s into place: %w", partial, err)
	}
	ok = true
	return cw.n, hex.EncodeToString(fileHash.Sum(nil)), nil
}

// copyEntry copies a file into the bundle, re-hashing it so a file that
// changed since the manifest was made is caught here, not at the customer.
func copyEntry(tw *tar.Writer, f fileEntry, mtime time.Time, p Progress) error {
	src, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", f.path, err)
	}
	defer src.Close()
	mode := int64(0o644)
	if f.Executable {
		mode = 0o755
	}
	if err := tw.WriteHeader(memberHeader(f.Name, f.Size, mode, mtime)); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name, err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(tw, io.TeeReader(&progressReader{r: src, p: p}, h), make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("writing %s from %s: %w", f.Name, f.path, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("%s changed while the bundle was being built; build again", f.path)
	}
	return nil
}

// progressReader counts bytes read into a Progress.
type progressReader struct {
	r io.Reader
	p Progress
}

// Read implements io.Reader.
func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	if n > 0 {
		pr.p.Add(int64(n))
	}
	return n, err
}
