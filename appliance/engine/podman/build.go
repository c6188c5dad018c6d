package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/containers/buildah/define"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/outpostdev/outpost/appliance/engine"
)

// BuildImage builds spec through the service's build endpoint (the context
// is sent as a tar stream), never pulling: every FROM must name an image
// in local storage or an earlier stage. The image is written in Docker
// format so a HEALTHCHECK survives.
func (e *Engine) BuildImage(ctx context.Context, spec engine.BuildSpec) (string, error) {
	if len(spec.Tags) == 0 {
		return "", errors.New("building image: no tag given")
	}
	file, err := containerfile(spec)
	if err != nil {
		return "", err
	}
	out := spec.Output
	if out == nil {
		out = io.Discard
	}
	var labels []string
	for k, v := range spec.Labels {
		labels = append(labels, k+"="+v)
	}
	sort.Strings(labels)
	opts := types.BuildOptions{BuildOptions: define.BuildOptions{
		ContextDirectory:        spec.ContextDir,
		Args:                    spec.Args,
		Target:                  spec.Target,
		Output:                  spec.Tags[0],
		AdditionalTags:          spec.Tags[1:],
		Labels:                  labels,
		PullPolicy:              define.PullNever,
		OutputFormat:            define.Dockerv2ImageManifest,
		Layers:                  true,
		RemoveIntermediateCtrs:  true,
		ForceRmIntermediateCtrs: true,
		CommonBuildOpts:         &define.CommonBuildOptions{},
		Out:                     out,
		Err:                     out,
		ReportWriter:            out,
	}}
	rep, err := images.Build(e.callCtx(ctx), []string{file}, opts)
	if err != nil {
		return "", fmt.Errorf("building %s from %s: %w", spec.Tags[0], file, err)
	}
	if rep == nil || rep.ID == "" {
		return "", fmt.Errorf("building %s from %s: podman reported no image ID", spec.Tags[0], file)
	}
	return rep.ID, nil
}

// containerfile resolves the file to build.
func containerfile(spec engine.BuildSpec) (string, error) {
	if spec.Containerfile != "" {
		f := spec.Containerfile
		if !filepath.IsAbs(f) {
			f = filepath.Join(spec.ContextDir, f)
		}
		return f, nil
	}
	for _, name := range []string{"Containerfile", "Dockerfile"} {
		f := filepath.Join(spec.ContextDir, name)
		if _, err := os.Stat(f); err == nil {
			return f, nil
		}
	}
	return "", fmt.Errorf("building image: no Containerfile or Dockerfile in %s", spec.ContextDir)
}
