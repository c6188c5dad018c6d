package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
)

// How a connection check reaches its target from a service. Images often
// have no shell, so three ways are tried in order:
//
//  1. The service runs the probe image itself (Outpost's demo image): exec
//     its probe helper in the service's container.
//  2. The container has /bin/sh: exec a small script that connects with
//     whatever the image has (bash's /dev/tcp, python3, perl, nc; curl,
//     wget or python3 for HTTP).
//  3. Otherwise, or when none of those tools exists: a throwaway container
//     of the probe image on the same networks as the service. It resolves
//     names through the same network DNS and reaches what the service
//     reaches on the appliance's networks, which is what the check is
//     about; it does not share the service's own network namespace.

// probeTimeout bounds one connection attempt inside a container.
const probeTimeout = 5 * time.Second

// noTool is the exit status the shell script uses when the image has no
// tool to probe with.
const noTool = 127

// tcpScript connects to $1:$2 with the first tool the image has.
const tcpScript = `h="$1"; p="$2"
if command -v bash >/dev/null 2>&1; then exec bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p"; fi
if command -v python3 >/dev/null 2>&1; then exec python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()' "$h" "$p"; fi
if command -v perl >/dev/null 2>&1; then exec perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr=>$ARGV[0], PeerPort=>$ARGV[1], Timeout=>5) or die "connect: $!\n"' "$h" "$p"; fi
if command -v nc >/dev/null 2>&1; then exec nc -z -w 5 "$h" "$p"; fi
echo "no tool to probe with (bash, python3, perl, nc)"; exit 127`

// httpScript GETs $1 and prints "status=NNN" with the first tool the image
// has.
const httpScript = `u="$1"
if command -v curl >/dev/null 2>&1; then s=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$u") || { echo "curl: exit $?"; exit 1; }; echo "status=$s"; exit 0; fi
if command -v wget >/dev/null 2>&1; then s=$(wget -q -S -O /dev/null -T 5 "$u" 2>&1 | awk '/^ *HTTP\//{c=$2} END{print c}'); [ -n "$s" ] || { echo "wget: no response"; exit 1; }; echo "status=$s"; exit 0; fi
if command -v python3 >/dev/null 2>&1; then exec python3 -c '
import sys, urllib.request, urllib.error
try:
    print("status=%d" % urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print("status=%d" % e.code)
except Exception as e:
    print(e); sys.exit(1)' "$u"; fi
echo "no tool to probe with (curl, wget, python3)"; exit 127`

var statusLine = regexp.MustCompile(`status=(\d{3})`)

// fromInside runs a declared check from inside service c.From.
func (s *smoker) fromInside(ctx context.Context, c model.SmokeCheck) (ok bool, detail string, notes []string) {
	what := "connect to " + c.Target
	if c.URL != "" {
		what = "GET " + c.URL
	}
	container := runtime.ContainerName(s.test.Name, c.From)
	info, err := s.eng.InspectContainer(ctx, container)
	if err != nil {
		return false, fmt.Sprintf("%s from %s: inspecting its container: %v", what, c.From, err), nil
	}
	pctx, cancel := context.WithTimeout(ctx, 4*probeTimeout)
	defer cancel()

	// 1. The service runs the probe image.
	if id, _ := s.probeImageID(ctx, false); id != "" && id == info.ImageID {
		res, err := s.eng.Exec(pctx, info.ID, helperArgs(c))
		if err != nil {
			return false, fmt.Sprintf("%s from %s: exec: %v", what, c.From, err), nil
		}
		return s.helperVerdict(c, what, "exec of the probe helper in "+container, res.ExitCode, res.Output)
	}

	// 2. A shell with a tool.
	if has, _ := s.eng.PathExists(ctx, info.ID, "/bin/sh"); has {
		cmd := []string{"/bin/sh", "-c", tcpScript, "probe"}
		if c.URL != "" {
			cmd = []string{"/bin/sh", "-c", httpScript, "probe", c.URL}
		} else {
			h, p, _ := net.SplitHostPort(c.Target)
			cmd = append(cmd, h, p)
		}
		res, err := s.eng.Exec(pctx, info.ID, cmd)
		switch {
		case err != nil:
			return false, fmt.Sprintf("%s from %s: exec: %v", what, c.From, err), nil
		case res.ExitCode != noTool:
			return shellVerdict(c, what, container, res.ExitCode, res.Output)
		}
		s.opts.Log.Debug("no probe tool in the image; using a helper container", "service", c.From)
	}

	// 3. A helper container on the service's networks.
	return s.helperContainer(ctx, c, what)
}

// helperArgs is the probe helper's command line for a check.
func helperArgs(c model.SmokeCheck) []string {
	args := []string{ProbeBinary, "demo-role", "probe", "--timeout", probeTimeout.String()}
	if c.URL != "" {
		return append(args, "--http", c.URL)
	}
	return append(args, "--tcp", c.Target)
}

// helperVerdict interprets the probe helper's exit status. It accepts any
// 2xx or 3xx for HTTP: it cannot check an exact status.
func (s *smoker) helperVerdict(c model.SmokeCheck, what, how string, code int, out string) (bool, string, []string) {
	out = strings.TrimSpace(out)
	if code != 0 {
		return false, fmt.Sprintf("%s from %s failed (%s): %s", what, c.From, how, firstNonEmpty(out, "exit "+strconv.Itoa(code))), nil
	}
	detail := fmt.Sprintf("%s from %s succeeded (%s)", what, c.From, how)
	var notes []string
	if c.URL != "" && c.Status != 0 {
		notes = append(notes, fmt.Sprintf("the probe helper accepts any 2xx/3xx; status %d was not checked exactly", c.Status))
	}
	return true, detail, notes
}

// shellVerdict interprets the shell script's result.
func shellVerdict(c model.SmokeCheck, what, container string, code int, out string) (bool, string, []string) {
	out = strings.TrimSpace(out)
	how := "shell in " + container
	if c.URL == "" {
		if code != 0 {
			return false, fmt.Sprintf("%s from %s failed (%s): %s", what, c.From, how, firstNonEmpty(out, "exit "+strconv.Itoa(code))), nil
		}
		return true, fmt.Sprintf("%s from %s succeeded (%s)", what, c.From, how), nil
	}
	m := statusLine.FindStringSubmatch(out)
	if code != 0 || m == nil {
		return false, fmt.Sprintf("%s from %s failed (%s): %s", what, c.From, how, firstNonEmpty(out, "exit "+strconv.Itoa(code))), nil
	}
	got, _ := strconv.Atoi(m[1])
	if !statusOK(got, c.Status) {
		return false, fmt.Sprintf("%s from %s → %d, want %s (%s)", what, c.From, got, wantStatus(c.Status), how), nil
	}
	return true, fmt.Sprintf("%s from %s → %d (%s)", what, c.From, got, how), nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// probeImageID returns the probe image's ID, making it available once
// when ensure is set.
func (s *smoker) probeImageID(ctx context.Context, ensure bool) (string, error) {
	if s.probeID != "" {
		return s.probeID, nil
	}
	if !ensure {
		// Cheap look without building: is the helper image already here?
		if s.probeImage == "" {
			return "", nil
		}
		info, err := s.eng.ImageInspect(ctx, s.probeImage)
		if err != nil {
			return "", err
		}
		s.probeID = info.ID
		return s.probeID, nil
	}
	if s.probeTried {
		return "", s.probeErr
	}
	s.probeTried = true
	if s.opts.EnsureProbeImage == nil {
		s.probeErr = errors.New("no probe helper image is available")
		return "", s.probeErr
	}
	ref, err := s.opts.EnsureProbeImage(ctx)
	if err != nil {
		s.probeErr = fmt.Errorf("preparing the probe helper image: %w", err)
		return "", s.probeErr
	}
	info, err := s.eng.ImageInspect(ctx, ref)
	if err != nil {
		s.probeErr = fmt.Errorf("inspecting the probe helper image %s: %w", ref, err)
		return "", s.probeErr
	}
	s.probeImage, s.probeID = ref, info.ID
	return s.probeID, nil
}

// helperContainer runs the probe helper in a throwaway container attached
// to c.From's networks, labelled as the test project's.
func (s *smoker) helperContainer(ctx context.Context, c model.SmokeCheck, what string) (bool, string, []string) {
	if _, err := s.probeImageID(ctx, true); err != nil {
		return false, fmt.Sprintf("%s from %s: the service's image has no shell tool to probe with, and %v", what, c.From, err), nil
	}
	svc := s.test.Services[c.From]
	nets := map[string][]string{}
	keys := svc.Networks
	if len(keys) == 0 {
		keys = map[string][]string{"default": nil}
	}
	for key := range keys {
		name := key
		if n, ok := s.test.Networks[key]; ok {
			name = n.Name
		}
		nets[name] = nil
	}
	s.helperSeq++
	args := helperArgs(c)
	spec := engine.ContainerSpec{
		Name:          fmt.Sprintf("%s-probe-%s-%d", s.test.Name, c.From, s.helperSeq),
		Image:         s.probeImage,
		Entrypoint:    args[:1],
		EntrypointSet: true,
		Command:       args[1:],
		Networks:      nets,
		Labels: map[string]string{
			engine.LabelAppliance: s.test.Name,
			engine.LabelTest:      s.test.Name,
			engine.LabelJob:       "smoke-probe",
		},
	}
	how := "helper container on " + c.From + "'s networks"
	cctx, cancel := context.WithTimeout(ctx, 4*probeTimeout+30*time.Second)
	defer cancel()
	id, err := s.eng.CreateContainer(cctx, spec)
	if err != nil {
		return false, fmt.Sprintf("%s from %s: creating the probe container: %v", what, c.From, err), nil
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer rcancel()
		_ = s.eng.RemoveContainer(rctx, id)
	}()
	if err := s.eng.StartContainer(cctx, id); err != nil {
		return false, fmt.Sprintf("%s from %s: starting the probe container: %v", what, c.From, err), nil
	}
	for {
		info, err := s.eng.InspectContainer(cctx, id)
		if err != nil {
			return false, fmt.Sprintf("%s from %s: waiting for the probe container: %v", what, c.From, err), nil
		}
		if !info.Running && info.State != "created" {
			var b strings.Builder
			_ = s.eng.Logs(cctx, id, engine.LogOptions{Tail: 20}, &b)
			return s.helperVerdict(c, what, how, info.ExitCode, b.String())
		}
		select {
		case <-cctx.Done():
			return false, fmt.Sprintf("%s from %s: the probe container did not finish in time", what, c.From), nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
