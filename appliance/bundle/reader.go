package bundle

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// ReaderOptions tune NewReader.
type ReaderOptions struct {
	// Trust holds the keys the manifest must be signed by. Required
	// unless SkipSignature.
	Trust *Trust
	// SkipSignature reads the manifest without checking its signature.
	// Only for looking (inspect) and fuzzing: nothing read this way may be
	// acted on.
	SkipSignature bool
}

// Reader reads a bundle in one pass: the manifest and its signature
// first, checked before anything else is read, then each entry in the
// manifest's order, hashed as it streams. An entry's reader returns io.EOF
// only once its size and sha256 match the signed manifest; otherwise it
// returns an error naming the entry (wrapping ErrCorrupt, ErrTruncated,
// ...). A Reader is not safe for concurrent use.
type Reader struct {
	dec      *zstd.Decoder
	src      io.Reader
	tr       *tar.Reader
	manifest *Manifest
	raw      []byte
	sig      []byte
	keyID    string
	next     int
	cur      *EntryReader
	err      error
}

// NewReader starts reading the zstd-compressed bundle r: it reads the
// manifest and signature, verifies the signature (unless
// opts.SkipSignature) and validates the manifest. Close releases the
// decompressor.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	dec, err := zstd.NewReader(r,
		// Bundles are written with the default window (8 MiB at the
		// default level); a hostile file cannot make us allocate more
		// than this.
		zstd.WithDecoderMaxWindow(64<<20),
		zstd.WithDecoderConcurrency(2),
	)
	if err != nil {
		return nil, fmt.Errorf("starting zstd decoder: %w", err)
	}
	br, err := newTarReader(dec, opts)
	if err != nil {
		dec.Close()
		return nil, err
	}
	br.dec = dec
	return br, nil
}

// newTarReader reads a bundle's uncompressed tar stream (NewReader minus
// zstd; the fuzz target drives it directly).
func newTarReader(src io.Reader, opts ReaderOptions) (*Reader, error) {
	r := &Reader{src: src, tr: tar.NewReader(src)}
	raw, err := r.readHead(ManifestName, maxManifestSize)
	if err != nil {
		return nil, err
	}
	sig, err := r.readHead(SignatureName, maxSignatureSize)
	if err != nil {
		return nil, err
	}
	if !opts.SkipSignature {
		// The signature is checked on the raw bytes before they are
		// parsed: nothing in an unsigned manifest is looked at.
		if r.keyID, err = opts.Trust.Verify(raw, sig); err != nil {
			return nil, err
		}
	} else if s, _, err := parseSignature(sig); err == nil {
		r.keyID = s.KeyID
	}
	m, err := ParseManifest(raw)
	if err != nil {
		return nil, err
	}
	r.manifest, r.raw, r.sig = m, raw, sig
	return r, nil
}

// readHead reads one of the two leading entries whole.
func (r *Reader) readHead(name string, limit int64) ([]byte, error) {
	hdr, err := r.tr.Next()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%w: the bundle ends before its %s", ErrTruncated, name)
		}
		if errors.Is(err, zstd.ErrMagicMismatch) {
			return nil, fmt.Errorf("%w: the file is not zstd-compressed (an outpost bundle is a zstd stream of a tar)", ErrFormat)
		}
		return nil, streamErr(err, "reading "+name)
	}
	if err := SafeHeadName(hdr.Name); err != nil {
		return nil, err
	}
	if hdr.Name != name {
		return nil, fmt.Errorf("%w: first entries must be %s and %s, found %q", ErrFormat, ManifestName, SignatureName, hdr.Name)
	}
	if err := regularFile(hdr); err != nil {
		return nil, err
	}
	if hdr.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrFormat, name, hdr.Size, limit)
	}
	buf := make([]byte, hdr.Size)
	if _, err := io.ReadFull(r.tr, buf); err != nil {
		return nil, streamErr(err, "reading "+name)
	}
	return buf, nil
}

// SafeHeadName refuses unsafe names among the leading entries with the
// same messages as elsewhere (the leading entries sit at the root).
func SafeHeadName(name string) error {
	if name == ManifestName || name == SignatureName {
		return nil
	}
	return SafeName(name)
}

// regularFile refuses anything but a plain file: a symlink or hard link
// could point outside the extraction root, a device or FIFO is never part
// of a bundle.
func regularFile(hdr *tar.Header) error {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			// A sparse file's holes read as zeros without being in the
			// stream: a small file could claim to be huge.
			return fmt.Errorf("%w: entry %q is a sparse file; bundles hold only plain regular files", ErrUnsafePath, hdr.Name)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars write TypeRegA
		return nil
	case tar.TypeSymlink:
		return fmt.Errorf("%w: entry %q is a symbolic link to %q; bundles hold only regular files", ErrUnsafePath, hdr.Name, hdr.Linkname)
	case tar.TypeLink:
		return fmt.Errorf("%w: entry %q is a hard link to %q; bundles hold only regular files", ErrUnsafePath, hdr.Name, hdr.Linkname)
	default:
		return fmt.Errorf("%w: entry %q has tar type %q; bundles hold only regular files", ErrUnsafePath, hdr.Name, string(hdr.Typeflag))
	}
}

// Manifest returns the (verified, unless SkipSignature) manifest.
func (r *Reader) Manifest() *Manifest { return r.manifest }

// ManifestBytes returns the manifest's exact bytes, as signed.
func (r *Reader) ManifestBytes() []byte { return r.raw }

// SignatureBytes returns the signature entry's exact bytes.
func (r *Reader) SignatureBytes() []byte { return r.sig }

// KeyID is the ID of the key that signed the manifest ("" when unknown).
// With SkipSignature it is only what the signature claims.
func (r *Reader) KeyID() string { return r.keyID }

// Close releases the decompressor.
func (r *Reader) Close() {
	if r.dec != nil {
		r.dec.Close()
	}
}

// Next returns the next entry. An entry not read to its end is read (and
// verified) by Next before it moves on. After the last entry Next checks
// that nothing follows and returns io.EOF; errors are sticky.
func (r *Reader) Next() (*EntryReader, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.cur != nil && !r.cur.done {
		if _, err := io.Copy(io.Discard, r.cur); err != nil {
			return nil, r.fail(err)
		}
	}
	entries := r.manifest.Entries
	hdr, err := r.tr.Next()
	if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
		// Only with GODEBUG=tarinsecurepath=0; the checks below say why.
		err = nil
	}
	if err == io.EOF {
		if r.next < len(entries) {
			return nil, r.fail(fmt.Errorf("%w: entry %s is missing (the bundle ends after %d of %d entries)", ErrTruncated, entries[r.next].Name, r.next, len(entries)))
		}
		if err := r.checkEnd(); err != nil {
			return nil, r.fail(err)
		}
		r.err = io.EOF
		return nil, io.EOF
	}
	if err != nil {
		after := "at the start"
		if r.next > 0 {
			after = "after entry " + entries[r.next-1].Name
		}
		return nil, r.fail(streamErr(err, "reading the entry "+after))
	}
	if err := SafeHeadName(hdr.Name); err != nil {
		return nil, r.fail(err)
	}
	if err := regularFile(hdr); err != nil {
		return nil, r.fail(err)
	}
	if r.next >= len(entries) {
		return nil, r.fail(fmt.Errorf("%w: entry %q is not in the signed manifest (it follows the last listed entry)", ErrUnexpectedEntry, hdr.Name))
	}
	want := entries[r.next]
	if hdr.Name != want.Name {
		if _, listed := r.manifest.Entry(hdr.Name); listed {
			return nil, r.fail(fmt.Errorf("%w: entry %q is out of order: the manifest lists %s next", ErrUnexpectedEntry, hdr.Name, want.Name))
		}
		return nil, r.fail(fmt.Errorf("%w: entry %q is not in the signed manifest (expected %s)", ErrUnexpectedEntry, hdr.Name, want.Name))
	}
	if hdr.Size != want.Size {
		return nil, r.fail(fmt.Errorf("%w: entry %s is %d bytes, the manifest says %d", ErrCorrupt, want.Name, hdr.Size, want.Size))
	}
	r.next++
	r.cur = &EntryReader{Entry: want, r: r, h: sha256.New()}
	return r.cur, nil
}

// checkEnd accepts only zero padding after the tar's end and then the end
// of the compressed stream.
func (r *Reader) checkEnd() error {
	buf := make([]byte, 32<<10)
	var total int64
	for {
		n, err := r.src.Read(buf)
		if !allZero(buf[:n]) {
			return fmt.Errorf("%w: data follows the bundle's last entry", ErrUnexpectedEntry)
		}
		total += int64(n)
		if total > 1<<20 {
			return fmt.Errorf("%w: more than 1 MiB of padding after the last entry", ErrUnexpectedEntry)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: unreadable data follows the bundle's last entry (appended to the file?): %v", ErrUnexpectedEntry, err)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func (r *Reader) fail(err error) error {
	r.err = err
	return err
}

// streamErr classifies an error from the tar or zstd layer.
func streamErr(err error, step string) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s: the file ends early (incomplete copy?)", ErrTruncated, step)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, step, err)
	default:
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, step, err)
	}
}

// EntryReader streams one entry's bytes, hashing them. Its Read returns
// io.EOF only after the last byte matched the manifest.
type EntryReader struct {
	// Entry is the manifest's description of the entry.
	Entry Entry
	r     *Reader
	h     hash.Hash
	n     int64
	done  bool
	err   error
}

// Read implements io.Reader.
func (e *EntryReader) Read(p []byte) (int, error) {
	if e.done {
		return 0, io.EOF
	}
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.r.tr.Read(p)
	e.h.Write(p[:n])
	e.n += int64(n)
	switch {
	case err == io.EOF:
		if e.n != e.Entry.Size {
			e.err = fmt.Errorf("%w: entry %s ended after %d of %d bytes", ErrTruncated, e.Entry.Name, e.n, e.Entry.Size)
			return n, e.r.fail(e.err)
		}
		if got := hex.EncodeToString(e.h.Sum(nil)); got != e.Entry.SHA256 {
			e.err = fmt.Errorf("%w: entry %s has sha256 %s, the signed manifest says %s: it was modified after signing", ErrCorrupt, e.Entry.Name, got, e.Entry.SHA256)
			return n, e.r.fail(e.err)
		}
		e.done = true
		return n, io.EOF
	case err != nil:
		e.err = streamErr(err, fmt.Sprintf("entry %s at byte %d of %d", e.Entry.Name, e.n, e.Entry.Size))
		return n, e.r.fail(e.err)
	}
	return n, nil
}

// WriteTo implements io.WriterTo so io.Copy uses large reads.
func (e *EntryReader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := e.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Verified reports whether the whole entry was read and matched.
func (e *EntryReader) Verified() bool { return e.done }
