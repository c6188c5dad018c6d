package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
)

// Format is the manifest's format string; a reader refuses any other.
const Format = "outpost-bundle/v1"

// Names of the two entries every bundle starts with.
const (
	// ManifestName is the first entry: the manifest, JSON.
	ManifestName = "outpost-bundle.json"
	// SignatureName is the second entry: the ed25519 signature over the
	// manifest's exact bytes, JSON.
	SignatureName = "outpost-bundle.sig"
)

// Limits on the two leading entries, read into memory before anything is
// trusted.
const (
	maxManifestSize  = 8 << 20
	maxSignatureSize = 4 << 10
)

// Kind says what an entry is and where it may live.
type Kind string

// Entry kinds. Each has its own directory in the bundle.
const (
	// KindCompose is a Compose file, under app/.
	KindCompose Kind = "compose"
	// KindEnv is an env-file template, under app/.
	KindEnv Kind = "env"
	// KindOutpost is the outpost binary, bin/outpost.
	KindOutpost Kind = "outpost"
	// KindInstaller is install.sh, bin/install.sh.
	KindInstaller Kind = "installer"
	// KindImage is one image as a docker-archive with uncompressed
	// layers, images/<id hex>.tar.
	KindImage Kind = "image"
)

// kindDirs maps each kind to the one directory its entries live in.
var kindDirs = map[Kind]string{
	KindCompose:   "app",
	KindEnv:       "app",
	KindOutpost:   "bin",
	KindInstaller: "bin",
	KindImage:     "images",
}

// Manifest describes every entry of a bundle; the signature covers its
// exact bytes. Entries appear in the bundle in the manifest's order, right
// after the manifest and its signature.
type Manifest struct {
	// Format is always Format.
	Format string `json:"format"`
	// Appliance is the appliance name the Compose files define.
	Appliance string `json:"appliance"`
	// Version is the vendor's version of the appliance, when known.
	Version string `json:"version,omitempty"`
	// Created is when the bundle was built (RFC 3339); empty unless the
	// builder was given a time (e.g. SOURCE_DATE_EPOCH), so the same
	// inputs give the same bytes.
	Created string `json:"created,omitempty"`
	// ComposeFiles are the KindCompose entries in merge order.
	ComposeFiles []string `json:"compose_files"`
	// EnvFiles are the KindEnv entries in order.
	EnvFiles []string `json:"env_files,omitempty"`
	// Entries lists every entry after the signature, in stream order.
	Entries []Entry `json:"entries"`
	// Images describes each KindImage entry.
	Images []Image `json:"images,omitempty"`
	// OutpostVersion is the version of the included outpost binary.
	OutpostVersion string `json:"outpost_version,omitempty"`
}

// Entry is one file of the bundle.
type Entry struct {
	// Name is the entry's path in the bundle, "dir/file".
	Name string `json:"name"`
	// Kind says what the entry is.
	Kind Kind `json:"kind"`
	// Size is the exact number of bytes.
	Size int64 `json:"size"`
	// SHA256 is the lowercase hex sha256 of the bytes.
	SHA256 string `json:"sha256"`
	// Executable marks entries extracted with mode 0755 (else 0644).
	Executable bool `json:"executable,omitempty"`
}

// Image describes one image entry. Outpost pins images by ID — the sha256
// of the image's config, which Podman keeps as the image ID through save
// and load — never by a tag, which can move.
type Image struct {
	// Entry is the KindImage entry holding the image's archive.
	Entry string `json:"entry"`
	// ID is "sha256:<hex>" of the image config: Podman's image ID.
	ID string `json:"id"`
	// Refs are the names the image is tagged with when loaded, sorted:
	// the Compose files' references plus the other names the image had
	// where it was built (the vendor's tag scheme: <branch>, <semver>,
	// sha-<7 hex>, latest).
	Refs []string `json:"refs"`
	// Services are the services whose image this is.
	Services []string `json:"services,omitempty"`
	// RepoDigests are registry manifest digests the image was known by
	// where it was built (informational: a registry digest changes when
	// the image is re-archived; ID does not).
	RepoDigests []string `json:"repo_digests,omitempty"`
	// Platform is "os/architecture[/variant]".
	Platform string `json:"platform"`
	// Created is the image's creation time from its config.
	Created string `json:"created,omitempty"`
	// Labels are the image config's labels (OCI labels such as
	// org.opencontainers.image.version and .source among them).
	Labels map[string]string `json:"labels,omitempty"`
	// Layers are the image's layers in order.
	Layers []Layer `json:"layers"`
	// UnpackedSize is the sum of the layers' uncompressed sizes: about what
	// loading adds to image storage.
	UnpackedSize int64 `json:"unpacked_size"`
}

// Layer is one uncompressed layer of an image.
type Layer struct {
	// DiffID is "sha256:<hex>" of the uncompressed layer tar.
	DiffID string `json:"diff_id"`
	// Size is the uncompressed layer's size in bytes.
	Size int64 `json:"size"`
}

// Entry returns the entry named name.
func (m *Manifest) Entry(name string) (Entry, bool) {
	for _, e := range m.Entries {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// ImageByEntry returns the image whose archive is entry name.
func (m *Manifest) ImageByEntry(name string) (Image, bool) {
	for _, img := range m.Images {
		if img.Entry == name {
			return img, true
		}
	}
	return Image{}, false
}

// ImageByRef returns the image carrying ref (compared after
// normalisation, so "postgres:16" finds "docker.io/library/postgres:16").
func (m *Manifest) ImageByRef(ref string) (Image, bool) {
	want := NormalizeRef(ref)
	for _, img := range m.Images {
		for _, r := range img.Refs {
			if NormalizeRef(r) == want {
				return img, true
			}
		}
	}
	return Image{}, false
}

// TotalSize is the sum of all entry sizes (the bundle's uncompressed
// payload, without the manifest and signature).
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, e := range m.Entries {
		n += e.Size
	}
	return n
}

// Marshal encodes the manifest canonically: fixed field order, sorted map
// keys, two-space indent, trailing newline. Building the same bundle twice
// gives the same bytes.
func (m *Manifest) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encoding bundle manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseManifest decodes and validates manifest bytes. Unknown fields are
// refused: a field this version does not understand could carry meaning.
func ParseManifest(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: decoding manifest: %v", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: manifest has data after its JSON object", ErrFormat)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

var (
	hexRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// fileRe is what a file name inside a bundle directory may look like.
	fileRe = regexp.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._+@-]{0,127}$`)
)

// ValidEntryName reports why name cannot be an entry of kind k (nil when
// it can): entries are exactly "dir/file" with dir fixed by the kind, and
// file a plain name — no "..", no absolute paths, no backslashes. Anything that could resolve outside an extraction root is
// refused here, before any byte is written.
func ValidEntryName(name string, k Kind) error {
	if err := SafeName(name); err != nil {
		return err
	}
	dir, ok := kindDirs[k]
	if !ok {
		return fmt.Errorf("%w: unknown entry kind %q", ErrFormat, k)
	}
	if d, _ := path.Split(name); d != dir+"/" {
		return fmt.Errorf("%w: %s entry %q must be in %s/", ErrFormat, k, name, dir)
	}
	return nil
}

// SafeName reports why name is not a safe "dir/file" entry path.
func SafeName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty entry name", ErrUnsafePath)
	case strings.ContainsAny(name, "\\\x00"):
		return fmt.Errorf("%w: entry %q contains a backslash or NUL", ErrUnsafePath, name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: entry %q is an absolute path", ErrUnsafePath, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return fmt.Errorf("%w: entry %q climbs out of the bundle (\"..\")", ErrUnsafePath, name)
		}
	}
	if path.Clean(name) != name {
		return fmt.Errorf("%w: entry %q is not a clean path", ErrUnsafePath, name)
	}
	dir, file := path.Split(name)
	if strings.Count(name, "/") != 1 || !fileRe.MatchString(file) || file == "." {
		return fmt.Errorf("%w: entry %q is not of the form dir/file with a plain file name", ErrUnsafePath, name)
	}
	switch strings.TrimSuffix(dir, "/") {
	case "app", "bin", "images":
	default:
		return fmt.Errorf("%w: entry %q is outside app/, bin/ and images/", ErrUnsafePath, name)
	}
	return nil
}

// Validate checks the manifest is well-formed and self-consistent and
// reports every problem found, not just the first.
func (m *Manifest) Validate() error {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if m.Format != Format {
		// Nothing else can be trusted in another format.
		return fmt.Errorf("%w: manifest format %q, this outpost reads %q (use a newer outpost)", ErrFormat, m.Format, Format)
	}
	if m.Appliance == "" {
		add("appliance name is empty")
	}
	byName := map[string]Entry{}
	counts := map[Kind]int{}
	for i, e := range m.Entries {
		if err := ValidEntryName(e.Name, e.Kind); err != nil {
			add("entries[%d]: %v", i, err)
			continue
		}
		if _, dup := byName[e.Name]; dup {
			add("entries[%d]: duplicate entry %q", i, e.Name)
			continue
		}
		if e.Size < 0 {
			add("entry %s: negative size", e.Name)
		}
		if !hexRe.MatchString(e.SHA256) {
			add("entry %s: sha256 %q is not 64 lowercase hex digits", e.Name, e.SHA256)
		}
		byName[e.Name] = e
		counts[e.Kind]++
	}
	if counts[KindOutpost] > 1 || counts[KindInstaller] > 1 {
		add("more than one outpost binary or install.sh entry")
	}
	refd := map[string]bool{}
	checkList := func(field string, names []string, k Kind) {
		for _, n := range names {
			if e, ok := byName[n]; !ok || e.Kind != k {
				add("%s: %q is not a %s entry", field, n, k)
			}
			if refd[n] {
				add("%s: %q listed twice", field, n)
			}
			refd[n] = true
		}
	}
	if len(m.ComposeFiles) == 0 {
		add("compose_files is empty: a bundle needs at least one Compose file")
	}
	checkList("compose_files", m.ComposeFiles, KindCompose)
	checkList("env_files", m.EnvFiles, KindEnv)
	ids := map[string]bool{}
	refOwner := map[string]string{}
	for i, img := range m.Images {
		where := fmt.Sprintf("images[%d]", i)
		if e, ok := byName[img.Entry]; !ok || e.Kind != KindImage {
			add("%s: entry %q is not an image entry", where, img.Entry)
		}
		if refd[img.Entry] {
			add("%s: entry %q described twice", where, img.Entry)
		}
		refd[img.Entry] = true
		hexID, ok := strings.CutPrefix(img.ID, "sha256:")
		if !ok || !hexRe.MatchString(hexID) {
			add("%s: id %q is not sha256:<64 hex>", where, img.ID)
		} else if img.Entry != "images/"+hexID+".tar" {
			add("%s: entry %q does not match id %s (want images/%s.tar)", where, img.Entry, img.ID, hexID)
		}
		if ids[img.ID] {
			add("%s: image %s listed twice", where, img.ID)
		}
		ids[img.ID] = true
		if len(img.Refs) == 0 {
			add("%s: image %s has no references", where, img.ID)
		}
		for _, r := range img.Refs {
			if err := checkRef(r); err != nil {
				add("%s: %v", where, err)
			}
			if other, dup := refOwner[r]; dup && other != img.ID {
				add("%s: reference %s also names image %s", where, r, other)
			}
			refOwner[r] = img.ID
		}
		if !sort.StringsAreSorted(img.Refs) {
			add("%s: refs are not sorted", where)
		}
		var sum int64
		for j, l := range img.Layers {
			h, ok := strings.CutPrefix(l.DiffID, "sha256:")
			if !ok || !hexRe.MatchString(h) {
				add("%s.layers[%d]: diff_id %q is not sha256:<64 hex>", where, j, l.DiffID)
			}
			if l.Size < 0 {
				add("%s.layers[%d]: negative size", where, j)
			}
			sum += l.Size
		}
		if img.UnpackedSize != sum {
			add("%s: unpacked_size %d is not the sum of its layers (%d)", where, img.UnpackedSize, sum)
		}
	}
	for _, e := range m.Entries {
		if e.Kind == KindImage && !refd[e.Name] {
			add("entry %s: image entry without an images[] description", e.Name)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: invalid manifest: %s", ErrFormat, strings.Join(problems, "; "))
	}
	return nil
}

// refRe is a loose shape check for an image reference; podman does the
// full parsing when it tags.
var refRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)

func checkRef(r string) error {
	if len(r) > 512 || !refRe.MatchString(r) || strings.Contains(r, "..") || strings.Contains(r, "//") {
		return fmt.Errorf("reference %q is not a repository:tag image reference", r)
	}
	return nil
}

// TagKind classifies a tag in the vendor scheme OpenAleph and Tale use:
// "latest", "semver" (v1.2.3, 1.2.3-rc1, and the shortened 16 or 5.0),
// "sha" (sha-abc1234: the commit an image was built from) or "branch"
// (anything else, e.g. main); "none" when the reference has no tag.
func TagKind(ref string) string {
	tag := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		tag = ref[i+1:]
	} else if strings.Contains(ref, "/") || strings.Contains(ref, ":") {
		return "none"
	}
	switch {
	case tag == "latest":
		return "latest"
	case shaTagRe.MatchString(tag):
		return "sha"
	case semverRe.MatchString(tag):
		return "semver"
	default:
		return "branch"
	}
}

var (
	shaTagRe = regexp.MustCompile(`^sha-[0-9a-f]{7,40}$`)
	semverRe = regexp.MustCompile(`^v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,2}([-+][0-9A-Za-z.+-]+)?$`)
)

// NormalizeRef returns the fully qualified form of an image reference as
// Podman resolves local names: a name without a registry gets docker.io,
// docker.io names without a namespace get library/, a missing tag is
// "latest". "postgres" and "docker.io/library/postgres:latest" are equal.
func NormalizeRef(ref string) string {
	name, digest, _ := strings.Cut(ref, "@")
	tag := ""
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		rest = name
		first = "docker.io"
	}
	if first == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	out := first + "/" + rest
	if tag == "" && digest == "" {
		tag = "latest"
	}
	if tag != "" {
		out += ":" + tag
	}
	if digest != "" {
		out += "@" + digest
	}
	return out
}

// Errors callers can branch on with errors.Is. Every error a reader
// returns wraps one of them and names the entry concerned.
var (
	// ErrSignature: the manifest's signature is missing, malformed, made
	// by an untrusted key or does not match the manifest.
	ErrSignature = errors.New("bundle signature check failed")
	// ErrCorrupt: an entry's bytes do not match the manifest's size or
	// sha256, or the compressed stream is damaged.
	ErrCorrupt = errors.New("bundle content does not match its manifest")
	// ErrTruncated: the bundle ends before its last entry.
	ErrTruncated = errors.New("bundle is truncated")
	// ErrUnsafePath: an entry name could escape the extraction root, or an
	// entry is a link or device.
	ErrUnsafePath = errors.New("unsafe bundle entry")
	// ErrUnexpectedEntry: an entry the signed manifest does not list, or
	// one out of order.
	ErrUnexpectedEntry = errors.New("unexpected bundle entry")
	// ErrFormat: not a bundle, or a manifest this version cannot read.
	ErrFormat = errors.New("not a valid outpost bundle")
)
