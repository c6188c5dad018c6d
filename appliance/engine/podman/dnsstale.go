package podman

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containers/podman/v5/pkg/bindings/containers"
)

// Stale aardvark-dns configuration.
//
// With the netavark backend, name resolution between containers is served
// by one aardvark-dns process per user, configured by one file per network
// in <network run dir>/aardvark-dns: a first line with the network's
// gateway addresses, then one line per attached container
// ("<id> <ipv4s> <ipv6s> <names>"). netavark adds a container's line when
// it starts and removes it when its network is torn down. When that teardown
// never happens — the processes holding the rootless user namespace were
// killed, or `podman system migrate` marked the containers stopped — the
// lines stay, and so does the file of a network whose bridge is gone. The
// next reload of aardvark-dns (every container start sends one) then fails
// to serve the vanished gateway and the process ends; netavark, seeing its
// pid file, does not start another. Measured on Podman 4.3.1 with
// aardvark-dns 1.4.0: with one such leftover file, about half of the
// `down`/`up` cycles of a two-service appliance left the dependant unable to
// resolve its dependency's name ("store") for good, and none did once the
// file was gone (18 of 18 cycles).
//
// Before each container start the engine therefore removes the lines of
// containers Podman no longer has, and the file of any network left with no
// container lines, exactly as netavark's own teardown would have. Lines of
// containers that still exist are never touched, so containers being
// started or stopped concurrently by other clients keep their entries.

// aardvarkDir returns the directory of aardvark-dns configuration files for
// a local service of this user, or "" when there is none to look after.
func (e *Engine) aardvarkDir() string {
	if e.networkBackend != "netavark" || !strings.HasPrefix(e.uri, "unix://") {
		return ""
	}
	dir := "/run/containers/networks/aardvark-dns"
	if e.rootless {
		rt := os.Getenv("XDG_RUNTIME_DIR")
		if rt == "" {
			return ""
		}
		dir = filepath.Join(rt, "containers", "networks", "aardvark-dns")
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return ""
	}
	// Only the service's owner's files: a socket of another user's Podman
	// (CONTAINER_HOST) has its own directory elsewhere.
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return ""
	}
	return dir
}

// pruneStaleDNS removes aardvark-dns entries of containers that no longer
// exist (see above). Failures are logged, never returned: starting the
// container matters more, and the start itself reports real problems.
func (e *Engine) pruneStaleDNS(ctx context.Context) {
	dir := e.aardvarkDir()
	if dir == "" {
		return
	}
	files, err := readAardvarkFiles(dir)
	if err != nil {
		e.logger.Debug("reading aardvark-dns configuration", "dir", dir, "error", err)
		return
	}
	if len(files) == 0 {
		return
	}
	// List after reading: a line read above belongs to a container that
	// existed when it was written, so its absence now means it is gone.
	list, err := containers.List(e.callCtx(ctx), new(containers.ListOptions).WithAll(true))
	if err != nil {
		e.logger.Debug("listing containers for aardvark-dns hygiene", "error", err)
		return
	}
	exists := make(map[string]bool, len(list))
	for _, c := range list {
		exists[c.ID] = true
	}
	for name, data := range files {
		kept, removed := pruneAardvarkFile(data, exists)
		if len(removed) == 0 {
			continue
		}
		p := filepath.Join(dir, name)
		if err := rewriteAardvarkFile(p, kept); err != nil {
			e.logger.Warn("could not remove stale aardvark-dns entries", "file", p, "error", err)
			continue
		}
		e.logger.Warn("removed aardvark-dns entries of containers Podman no longer has (their network teardown never ran; left in place they stop name resolution between containers)",
			"network", name, "containers", strings.Join(removed, ","), "file_removed", kept == nil)
	}
}

// readAardvarkFiles returns the network files of dir by name.
func readAardvarkFiles(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, ent := range entries {
		// aardvark.pid and the lock are not network files.
		if !ent.Type().IsRegular() || strings.HasPrefix(ent.Name(), "aardvark") || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		if err != nil {
			return nil, err
		}
		out[ent.Name()] = b
	}
	return out, nil
}

// pruneAardvarkFile drops the container lines of data whose container ID is
// not in exists. It returns the new content — nil when no container line
// remains, so the file should go — and the short IDs dropped.
func pruneAardvarkFile(data []byte, exists map[string]bool) (kept []byte, removed []string) {
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	first, containersLeft := true, 0
	for sc.Scan() {
		line := sc.Text()
		if first {
			// The gateway line.
			first = false
			out.WriteString(line + "\n")
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !exists[fields[0]] {
			removed = append(removed, shortID(fields[0]))
			continue
		}
		containersLeft++
		out.WriteString(line + "\n")
	}
	if len(removed) == 0 {
		return data, nil
	}
	if containersLeft == 0 {
		return nil, removed
	}
	return out.Bytes(), removed
}

// rewriteAardvarkFile replaces p with data atomically, or removes it when
// data is nil.
func rewriteAardvarkFile(p string, data []byte) error {
	if data == nil {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	// The temporary file lives next to the directory, not in it:
	// aardvark-dns reads every file in it as a network.
	tmp := filepath.Join(filepath.Dir(filepath.Dir(p)), ".outpost-"+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", p, err)
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
