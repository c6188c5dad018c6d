package podman

import (
	"context"

	"github.com/containers/podman/v5/pkg/bindings/system"
)

// VolumeSizes reports the disk usage of every volume, by name, as Podman's
// `system df` computes it inside the user namespace (the rootless user
// cannot read the volumes' files from the host). It is not part of
// engine.Engine: only `outpost volumes` needs it, and it is slow on hosts
// with many images. Callers assert it.
func (e *Engine) VolumeSizes(ctx context.Context) (map[string]int64, error) {
	rep, err := system.DiskUsage(e.callCtx(ctx), nil)
	if err != nil {
		return nil, apiErr("measuring volume sizes", err)
	}
	out := make(map[string]int64, len(rep.Volumes))
	for _, v := range rep.Volumes {
		if v != nil {
			out[v.VolumeName] = v.Size
		}
	}
	return out, nil
}
