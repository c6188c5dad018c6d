package checks

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
)

// Whiteout markers of the OCI/Docker layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// layerScan is what one pass over an image's layers found.
type layerScan struct {
	// Uncompressed is the sum of the layers' tar sizes; Compressed the sum
	// of their gzip sizes (default level, as a registry push makes them).
	Uncompressed, Compressed int64
	// Findings are secret files, with notes on later deletion.
	Findings []Finding
	// Ignored counts candidate files skipped by secrets_ignore.
	Ignored int
	// Files holds the final content (up to maxContentScan) of the wanted
	// paths that exist in the merged filesystem.
	Files map[string][]byte
}

// layerResult is what scanning one layer found.
type layerResult struct {
	uncompressed, compressed int64
	// candidates are paths whose name made them screened (whatever the
	// content), so a later layer writing the same path can be noticed.
	candidates map[string]bool
	findings   []Finding
	ignored    int
	// deleted are whiteout targets; opaque are directories whose lower
	// content this layer hides.
	deleted, opaque []string
	// files are wanted paths this layer writes (nil content: not a
	// regular file, e.g. a symlink, which hides the lower one).
	files map[string][]byte
}

// layerCache keeps layer scans by diff ID, so images sharing base layers
// read them once per run. A scan is reused when it captured every file
// the new image wants.
type layerCache struct {
	mu sync.Mutex
	m  map[string]cachedLayer
}

type cachedLayer struct {
	res  *layerResult
	want map[string]bool
}

func newLayerCache() *layerCache { return &layerCache{m: map[string]cachedLayer{}} }

// get returns the cached scan of diffID for layer index idx, nil when
// there is none usable.
func (c *layerCache) get(diffID string, idx int, want map[string]bool) *layerResult {
	if c == nil || diffID == "" {
		return nil
	}
	c.mu.Lock()
	e, ok := c.m[diffID]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	for p := range want {
		if !e.want[p] {
			return nil
		}
	}
	r := *e.res
	r.findings = make([]Finding, len(e.res.findings))
	for i, f := range e.res.findings {
		f.Layer = idx
		r.findings[i] = f
	}
	return &r
}

func (c *layerCache) put(diffID string, res *layerResult, want map[string]bool) {
	if c == nil || diffID == "" {
		return
	}
	w := make(map[string]bool, len(want))
	for p := range want {
		w[p] = true
	}
	c.mu.Lock()
	c.m[diffID] = cachedLayer{res: res, want: w}
	c.mu.Unlock()
}

// layerSource is one layer to scan: its diff ID (for the cache; may be
// empty) and how to open it.
type layerSource struct {
	diffID string
	open   layerOpener
}

// scanLayers reads every layer once (in parallel, up to workers at a time),
// measuring sizes, screening files for secrets, honouring whiteouts, and
// capturing the wanted files of the merged filesystem. cache may be nil.
func scanLayers(ctx context.Context, layers []layerSource, want map[string]bool, ignore *globMatcher, workers int, cache *layerCache) (*layerScan, error) {
	if workers < 1 {
		workers = 1
	}
	results := make([]*layerResult, len(layers))
	errs := make([]error, len(layers))
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			if r := cache.get(l.diffID, i, want); r != nil {
				results[i] = r
				return
			}
			results[i], errs[i] = scanLayer(ctx, i, l.open, want, ignore)
			if errs[i] == nil {
				cache.put(l.diffID, results[i], want)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mergeLayers(results), nil
}

// mergeLayers combines per-layer results in layer order.
func mergeLayers(results []*layerResult) *layerScan {
	out := &layerScan{Files: map[string][]byte{}}
	for _, r := range results {
		out.Uncompressed += r.uncompressed
		out.Compressed += r.compressed
		out.Ignored += r.ignored
		// A layer's whiteouts hide lower layers only, so apply them first.
		for p := range out.Files {
			if hiddenBy(p, r.deleted, r.opaque) {
				delete(out.Files, p)
			}
		}
		for p, b := range r.files {
			if b == nil {
				delete(out.Files, p)
			} else {
				out.Files[p] = b
			}
		}
	}
	for i, r := range results {
		for _, f := range r.findings {
			for j := i + 1; j < len(results); j++ {
				later := results[j]
				if hiddenBy(f.Where, later.deleted, later.opaque) {
					f.Note = fmt.Sprintf("deleted in layer %d, but layer %d still ships it: anyone with the image can extract it; keep it out of every layer (multi-stage build)", j, i)
					break
				}
				if later.candidates[f.Where] {
					f.Note = fmt.Sprintf("overwritten in layer %d, but layer %d still ships the original", j, i)
					break
				}
			}
			out.Findings = append(out.Findings, f)
		}
	}
	sort.SliceStable(out.Findings, func(a, b int) bool { return out.Findings[a].Where < out.Findings[b].Where })
	return out
}

// hiddenBy reports whether p is removed by a whiteout of one of deleted
// (the path or a parent) or an opaque marker on a parent directory.
func hiddenBy(p string, deleted, opaque []string) bool {
	for _, d := range deleted {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	for _, d := range opaque {
		if strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// countWriter counts bytes written.
type countWriter struct{ n int64 }

// Write implements io.Writer.
func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

// Read implements io.Reader.
func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// layerOpener opens a layer's tar stream (gzip-compressed or not).
type layerOpener func() (io.ReadCloser, error)

// scanLayer reads one layer's tar stream.
func scanLayer(ctx context.Context, idx int, open layerOpener, want map[string]bool, ignore *globMatcher) (*layerResult, error) {
	rc, err := open()
	if err != nil {
		return nil, fmt.Errorf("opening layer %d: %w", idx, err)
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	var in io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("decompressing layer %d: %w", idx, err)
		}
		defer zr.Close()
		in = zr
	}
	var raw, gz countWriter
	zw, _ := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	src := io.TeeReader(ctxReader{ctx, in}, io.MultiWriter(&raw, zw))
	res := &layerResult{candidates: map[string]bool{}, files: map[string][]byte{}}
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading layer %d: %w", idx, err)
		}
		p := "/" + strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		dir, base := path.Split(p)
		dir = path.Clean(dir)
		switch {
		case base == whiteoutOpaque:
			res.opaque = append(res.opaque, dir)
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			res.deleted = append(res.deleted, path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
			continue
		}
		regular := h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA //nolint:staticcheck // old archives
		if want[p] {
			if regular {
				b, err := readUpTo(tr, maxContentScan)
				if err != nil {
					return nil, fmt.Errorf("reading %s in layer %d: %w", p, idx, err)
				}
				res.files[p] = b
			} else {
				res.files[p] = nil
			}
		}
		if !regular {
			continue
		}
		rule, what := classifyPath(p)
		if rule == ruleNone {
			continue
		}
		res.candidates[p] = true
		if ignore != nil && ignore.path(p) {
			res.ignored++
			continue
		}
		sev := SeverityFail
		if inTestTree(p) {
			sev = SeverityWarn
		}
		switch rule {
		case ruleAlways:
			res.findings = append(res.findings, Finding{Where: p, What: what, Layer: idx, Severity: sev})
		case ruleKeystore:
			res.findings = append(res.findings, Finding{Where: p, What: what + " (content not inspected)", Layer: idx, Severity: SeverityWarn})
		case ruleContent:
			b := res.files[p]
			if b == nil {
				if b, err = readUpTo(tr, maxContentScan); err != nil {
					return nil, fmt.Errorf("reading %s in layer %d: %w", p, idx, err)
				}
			}
			if !looksText(b) {
				continue
			}
			if found := contentFinding(what, b); found != "" {
				res.findings = append(res.findings, Finding{Where: p, What: found, Layer: idx, Severity: sev})
			}
		}
	}
	// Drain the tar padding so the sizes cover the whole blob.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return nil, fmt.Errorf("reading layer %d: %w", idx, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing layer %d: %w", idx, err)
	}
	res.uncompressed, res.compressed = raw.n, gz.n
	return res, nil
}

func readUpTo(r io.Reader, n int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, n))
}
