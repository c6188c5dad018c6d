package bundle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/outpostdev/outpost/appliance/engine"
)

// ImageBuilder builds images from Containerfiles. engine.Engine
// implements it.
type ImageBuilder interface {
	BuildImage(ctx context.Context, spec engine.BuildSpec) (string, error)
}

// ImageBuild is an image Build makes from a Containerfile (through the
// engine, never pulling) before it collects the definition's images.
type ImageBuild struct {
	// Ref names the result, e.g. "ghcr.io/acme/api:1.2.0"; the definition
	// refers to it.
	Ref string
	// Context is the build context directory.
	Context string
	// Containerfile is the file to build; default Containerfile or
	// Dockerfile in Context.
	Containerfile string
	// Target is the stage to build; "" for the last.
	Target string
}

// ParseImageBuild parses "REF=PATH": PATH is the context directory, or a
// Containerfile whose directory is the context.
func ParseImageBuild(s string) (ImageBuild, error) {
	ref, p, ok := strings.Cut(s, "=")
	if !ok || ref == "" || p == "" {
		return ImageBuild{}, fmt.Errorf("--build %q: want REF=DIR or REF=CONTAINERFILE", s)
	}
	if err := checkRef(NormalizeRef(ref)); err != nil || strings.Contains(ref, "@") {
		return ImageBuild{}, fmt.Errorf("--build %q: %q is not a repository:tag reference", s, ref)
	}
	st, err := os.Stat(p)
	if err != nil {
		return ImageBuild{}, fmt.Errorf("--build %q: %w", s, err)
	}
	b := ImageBuild{Ref: ref, Context: p}
	if !st.IsDir() {
		b.Context, b.Containerfile = filepath.Dir(p), p
	}
	return b, nil
}

// GitRef is what a source tree's git checkout says about its commit.
type GitRef struct {
	// Commit is the full commit hash; Short its first 7 hex digits.
	Commit, Short string
	// Branch is the checked-out branch ("" when detached).
	Branch string
	// Tag is a tag pointing exactly at the commit ("" when none).
	Tag string
}

// ReadGitRef asks git about dir's checkout.
func ReadGitRef(ctx context.Context, dir string) (GitRef, error) {
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	var r GitRef
	var err error
	if r.Commit, err = git("rev-parse", "HEAD"); err != nil {
		return r, fmt.Errorf("reading the git commit of %s (is it a git checkout, and git installed?): %w", dir, err)
	}
	if len(r.Commit) >= 7 {
		r.Short = r.Commit[:7]
	}
	r.Branch, _ = git("symbolic-ref", "--short", "-q", "HEAD")
	r.Tag, _ = git("describe", "--tags", "--exact-match", "HEAD")
	return r, nil
}

// Tags returns the image tags of the vendor scheme for this ref: the
// branch (sanitised), sha-<7 hex>, and the exact tag when there is one.
func (g GitRef) Tags() []string {
	var tags []string
	if b := sanitizeTag(g.Branch); b != "" {
		tags = append(tags, b)
	}
	if g.Short != "" {
		tags = append(tags, "sha-"+g.Short)
	}
	if t := sanitizeTag(g.Tag); t != "" {
		tags = append(tags, t)
	}
	return tags
}

// Version is the VERSION build argument this ref suggests: the exact tag,
// else sha-<7 hex>.
func (g GitRef) Version() string {
	if t := sanitizeTag(g.Tag); t != "" {
		return t
	}
	if g.Short != "" {
		return "sha-" + g.Short
	}
	return ""
}

var badTagChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// sanitizeTag makes s a valid image tag (feature/x -> feature-x).
func sanitizeTag(s string) string {
	s = strings.TrimLeft(badTagChars.ReplaceAllString(s, "-"), ".-")
	if len(s) > 128 {
		s = s[:128]
	}
	return s
}

// buildImages runs opts.Builds through the engine. With GitTags each
// image is also tagged by its context's git ref and, unless given, gets
// the build argument VERSION from it.
func buildImages(ctx context.Context, opts BuildOptions) error {
	if len(opts.Builds) == 0 {
		return nil
	}
	if opts.Builder == nil {
		return errors.New("building images: no container engine to build with")
	}
	out := opts.BuildLog
	if out == nil {
		out = io.Discard
	}
	for _, b := range opts.Builds {
		spec := engine.BuildSpec{
			ContextDir: b.Context, Containerfile: b.Containerfile, Target: b.Target,
			Args: map[string]string{}, Tags: []string{b.Ref}, Output: out,
		}
		for k, v := range opts.BuildArgs {
			spec.Args[k] = v
		}
		if opts.GitTags {
			g, err := ReadGitRef(ctx, b.Context)
			if err != nil {
				return err
			}
			repo := b.Ref
			if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
				repo = repo[:i]
			}
			for _, t := range g.Tags() {
				if repo+":"+t != b.Ref {
					spec.Tags = append(spec.Tags, repo+":"+t)
				}
			}
			if _, set := spec.Args["VERSION"]; !set && g.Version() != "" {
				spec.Args["VERSION"] = g.Version()
			}
			spec.Labels = map[string]string{"org.opencontainers.image.revision": g.Commit}
			if v := spec.Args["VERSION"]; v != "" {
				spec.Labels["org.opencontainers.image.version"] = v
			}
		}
		opts.Log.Info("building image", "ref", b.Ref, "context", b.Context, "tags", spec.Tags)
		id, err := opts.Builder.BuildImage(ctx, spec)
		if err != nil {
			return fmt.Errorf("building %s: %w", b.Ref, err)
		}
		opts.Log.Info("image built", "ref", b.Ref, "id", id)
	}
	return nil
}
