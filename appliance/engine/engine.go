// Package engine declares the small container-engine interface that Outpost's
// runtime needs, and the plain types that cross it. engine/podman implements
// it over the Podman bindings; nothing here imports them.
package engine

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) when a container, image, volume or
// network does not exist.
var ErrNotFound = errors.New("not found")

// Labels Outpost puts on everything it creates.
const (
	LabelAppliance  = "io.outpost.appliance"
	LabelService    = "io.outpost.service"
	LabelRevision   = "io.outpost.revision"
	LabelConfigHash = "io.outpost.config-hash"
	LabelJob        = "io.outpost.job"
	LabelVolume     = "io.outpost.volume"
	LabelTest       = "io.outpost.test"
)

// Engine is what the runtime needs from a container engine.
type Engine interface {
	// Info reports the engine's version and host facts.
	Info(ctx context.Context) (Info, error)

	// EnsureNetwork creates the network if it does not exist.
	EnsureNetwork(ctx context.Context, n NetworkSpec) error
	// RemoveNetwork removes a network; ErrNotFound when absent.
	RemoveNetwork(ctx context.Context, name string) error
	// ListNetworks lists networks carrying all the given labels.
	ListNetworks(ctx context.Context, labels map[string]string) ([]string, error)

	// EnsureVolume creates the volume if it does not exist and reports
	// whether it did.
	EnsureVolume(ctx context.Context, v VolumeSpec) (created bool, err error)
	// ListVolumes lists volumes carrying all the given labels.
	ListVolumes(ctx context.Context, labels map[string]string) ([]VolumeInfo, error)

	// ImageInspect returns an image's facts; ErrNotFound when absent.
	ImageInspect(ctx context.Context, ref string) (ImageInfo, error)
	// LoadImage loads a docker-archive or oci-archive tar stream and returns
	// the names it loaded.
	LoadImage(ctx context.Context, r io.Reader) ([]string, error)
	// SaveImage writes one image (by name or ID) to w as a docker-archive
	// tar stream with uncompressed layers, as `podman save` does.
	SaveImage(ctx context.Context, ref string, w io.Writer) error
	// TagImage adds the name ref ("repo:tag") to the image id, moving it
	// from any image that carried it.
	TagImage(ctx context.Context, id, ref string) error
	// RemoveImage removes an image and all its names; ErrNotFound when
	// absent. It fails when a container uses the image.
	RemoveImage(ctx context.Context, id string) error
	// ImageStore reports where the engine keeps images, for free-space
	// checks before loading.
	ImageStore(ctx context.Context) (ImageStoreInfo, error)
	// BuildImage builds an image from a Containerfile without pulling
	// (base images must be in local storage) and returns its ID.
	BuildImage(ctx context.Context, spec BuildSpec) (string, error)

	// CreateContainer creates (does not start) a container and returns its ID.
	CreateContainer(ctx context.Context, spec ContainerSpec) (string, error)
	// StartContainer starts a created or stopped container.
	StartContainer(ctx context.Context, id string) error
	// StopContainer sends the stop signal, waits up to timeout, then kills.
	StopContainer(ctx context.Context, id string, timeout time.Duration) error
	// RemoveContainer removes a container (forcefully if running); never
	// its named volumes.
	RemoveContainer(ctx context.Context, id string) error
	// InspectContainer returns a container's state; ErrNotFound when absent.
	InspectContainer(ctx context.Context, id string) (ContainerInfo, error)
	// ListContainers lists all containers (running or not) carrying all the
	// given labels.
	ListContainers(ctx context.Context, labels map[string]string) ([]ContainerInfo, error)
	// Exec runs cmd in a running container and returns its exit code and
	// combined output (truncated to a few KiB). The context bounds it.
	Exec(ctx context.Context, id string, cmd []string) (ExecResult, error)
	// ExecStream runs cmd in a running container, streaming: it copies
	// streams.Stdin (when set) to the process's standard input, closing it at
	// EOF, and the process's standard output and error to streams.Stdout and
	// streams.Stderr as they arrive, without buffering the whole output. It
	// returns the exit code once the process ends; the context bounds it.
	ExecStream(ctx context.Context, id string, cmd []string, streams ExecIO) (exitCode int, err error)
	// PauseContainer freezes every process of a running container.
	// Rootless Podman on cgroups v1 cannot: callers fall back to stopping.
	PauseContainer(ctx context.Context, id string) error
	// UnpauseContainer resumes a paused container.
	UnpauseContainer(ctx context.Context, id string) error
	// PathExists reports whether path exists inside a container's
	// filesystem (running or not) without needing a shell in the image.
	PathExists(ctx context.Context, id, path string) (bool, error)
	// Logs writes a container's logs (stdout and stderr interleaved) to w.
	Logs(ctx context.Context, id string, opts LogOptions, w io.Writer) error
}

// Info describes the engine.
type Info struct {
	Version     string `json:"version"`
	APIVersion  string `json:"api_version"`
	Rootless    bool   `json:"rootless"`
	OCIRuntime  string `json:"oci_runtime"`
	CgroupsV2   bool   `json:"cgroups_v2"`
	GraphDriver string `json:"graph_driver"`
}

// NetworkSpec describes a network to create.
type NetworkSpec struct {
	Name     string
	Internal bool
	Labels   map[string]string
}

// VolumeSpec describes a volume to create.
type VolumeSpec struct {
	Name   string
	Labels map[string]string
}

// VolumeInfo describes an existing volume.
type VolumeInfo struct {
	Name       string            `json:"name"`
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
}

// ImageInfo describes an image.
type ImageInfo struct {
	ID     string            `json:"id"`
	Digest string            `json:"digest,omitempty"`
	Names  []string          `json:"names,omitempty"`
	Size   int64             `json:"size"`
	User   string            `json:"user,omitempty"`
	Env    []string          `json:"env,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Healthcheck is the image's HEALTHCHECK test, nil when none.
	Healthcheck []string `json:"healthcheck,omitempty"`
}

// ImageStoreInfo describes the engine's image storage.
type ImageStoreInfo struct {
	// GraphRoot is the directory holding image layers.
	GraphRoot string `json:"graph_root"`
	// CopyTmpDir is where the engine stages image blobs while loading;
	// empty when the engine does not say (Podman's default is /var/tmp).
	CopyTmpDir string `json:"copy_tmp_dir,omitempty"`
	// Free is the free space of GraphRoot's filesystem as the engine sees
	// it, 0 when unknown.
	Free uint64 `json:"free,omitempty"`
}

// BuildSpec describes an image build from a Containerfile.
type BuildSpec struct {
	// ContextDir is the build context directory.
	ContextDir string
	// Containerfile is the file to build (absolute, or relative to
	// ContextDir); default Containerfile, else Dockerfile, in ContextDir.
	Containerfile string
	// Target is the stage of a multi-stage file to build; "" for the last.
	Target string
	// Args are the build arguments (ARG values), e.g. VERSION.
	Args map[string]string
	// Tags name the image; at least one.
	Tags []string
	// Labels are added to the image's config.
	Labels map[string]string
	// Output receives the build log; nil discards it.
	Output io.Writer
}

// MountSpec is one mount of a container.
type MountSpec struct {
	// Type is "volume", "bind" or "tmpfs".
	Type string
	// Source is the volume name or host path.
	Source   string
	Target   string
	ReadOnly bool
	// Options are extra mount options (e.g. "size=64m" for tmpfs).
	Options []string
}

// PortSpec publishes a container port on the host.
type PortSpec struct {
	HostIP        string
	HostPort      uint16
	ContainerPort uint16
	Protocol      string
}

// UlimitSpec is one rlimit.
type UlimitSpec struct {
	Name string // e.g. "nofile", "nproc"
	Soft uint64
	Hard uint64
}

// ContainerSpec is everything needed to create a container.
type ContainerSpec struct {
	Name       string
	Image      string
	Command    []string
	Entrypoint []string
	// EntrypointSet distinguishes an explicitly empty entrypoint from none.
	EntrypointSet bool
	Env           map[string]string
	User          string
	WorkingDir    string
	Hostname      string
	Mounts        []MountSpec
	Ports         []PortSpec
	// Networks maps network name to the aliases the container has on it.
	Networks map[string][]string
	// ExtraHosts are "host:ip"; ip "host-gateway" is resolved by the engine.
	ExtraHosts  []string
	ShmSize     int64
	Ulimits     []UlimitSpec
	MemLimit    int64
	PidsLimit   int64
	CapAdd      []string
	CapDrop     []string
	Init        bool
	ReadOnly    bool
	StopSignal  string
	StopTimeout time.Duration
	Labels      map[string]string
}

// ContainerInfo is a container's observed state.
type ContainerInfo struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Image string `json:"image"`
	// ImageID is the ID of the image the container was created from.
	ImageID string `json:"image_id"`
	// State is Podman's state: created, running, paused, exited, stopped...
	State      string            `json:"state"`
	Running    bool              `json:"running"`
	ExitCode   int               `json:"exit_code"`
	OOMKilled  bool              `json:"oom_killed,omitempty"`
	CreatedAt  time.Time         `json:"created_at"`
	StartedAt  time.Time         `json:"started_at"`
	FinishedAt time.Time         `json:"finished_at"`
	Labels     map[string]string `json:"labels,omitempty"`
	Ports      []PortSpec        `json:"ports,omitempty"`
}

// ExecResult is the outcome of an Exec.
type ExecResult struct {
	ExitCode int
	Output   string
}

// ExecIO are the streams and identity of an ExecStream.
type ExecIO struct {
	// Stdin is copied to the process's standard input; nil gives it none.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output; nil discards it.
	Stdout, Stderr io.Writer
	// User runs the command as this user ("name", "uid", "uid:gid");
	// empty keeps the container's user.
	User string
}

// LogOptions select which logs to return.
type LogOptions struct {
	// Tail is the number of last lines; 0 or negative means all.
	Tail   int
	Follow bool
	Since  time.Time
}
