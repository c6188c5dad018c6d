// Package podman implements engine.Engine over Podman's REST API using the
// podman/v5 bindings, and starts a private `podman system service` with a
// containers.conf fitted to the host (runtime, ulimits, cgroup manager).
//
// It is the only package that imports the bindings; everything else talks to
// engine.Engine. It supports Podman servers from 4.3 up, rootless first. It
// must not make decisions about appliances: it maps engine types to Podman
// calls and reports facts back.
//
// Building it requires the tags
// "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp".
package podman
