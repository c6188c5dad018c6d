//go:build podmane2e

// End-to-end tests against a real rootless Podman: they start their own
// service with StartService, load a busybox image built from the host's
// static busybox (apt-get install busybox-static), and remove everything
// they create. Compile as any user from the repository root, run as an
// unprivileged user with subuid/subgid ranges:
//
//	CGO_ENABLED=0 go test -c -o /tmp/podman-e2e.test \
//	  -tags "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp podmane2e" \
//	  ./appliance/engine/podman/
//	runuser -u outpost-test -- env HOME=/home/outpost-test \
//	  XDG_RUNTIME_DIR=/run/user/$(id -u outpost-test) PATH=/usr/bin:/bin \
//	  /tmp/podman-e2e.test -test.run TestPodmanE2E -test.v

package podman

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/volumes"
	"golang.org/x/sys/unix"

	"github.com/outpostdev/outpost/appliance/engine"
)

// e2e holds what the subtests share.
type e2e struct {
	t      *testing.T
	ctx    context.Context
	eng    *Engine
	prefix string
	image  string
	labels map[string]string
}

func TestPodmanE2E(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("run the Podman end-to-end tests as an unprivileged user with subuid/subgid ranges: rootless is what Outpost supports")
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatalf("podman not found on PATH: %v (apt-get install podman runc uidmap slirp4netns fuse-overlayfs)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	runtimeDir, err := os.MkdirTemp("", "outpost-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(runtimeDir)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	svc, err := StartService(ctx, ServiceOptions{RuntimeDir: runtimeDir, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := svc.Stop(context.Background()); err != nil {
			t.Errorf("stopping service: %v", err)
		}
		select {
		case <-svc.Done():
		default:
			t.Error("service still running after Stop")
		}
		if _, err := os.Stat(filepath.Join(runtimeDir, "podman.sock")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after Stop: %v", err)
		}
	}()

	eng, err := Connect(ctx, svc.URI(), WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	prefix := "outpost-e2e-" + randHex(4)
	x := &e2e{t: t, ctx: ctx, eng: eng, prefix: prefix, labels: map[string]string{engine.LabelTest: prefix}}
	defer x.cleanup()

	t.Run("Info", x.testInfo)
	t.Run("Conf", func(t *testing.T) { x.testConf(t, runtimeDir) })
	t.Run("ImageLoadInspect", x.testImage)
	if x.image == "" {
		t.Fatal("no test image; cannot go on")
	}
	t.Run("NetworkVolume", x.testNetworkVolume)
	t.Run("Container", x.testContainer)
	t.Run("Concurrent", x.testConcurrent)
	t.Run("StopKillInspect", x.testStopKill)
	t.Run("Logs", x.testLogs)
	t.Run("ListByLabel", x.testList)
	t.Run("NotFound", x.testNotFound)
}

func (x *e2e) name(s string) string { return x.prefix + "-" + s }

func (x *e2e) labelsWith(kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range x.labels {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func (x *e2e) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, _ := x.eng.ListContainers(ctx, x.labels)
	for _, c := range cs {
		_ = x.eng.RemoveContainer(ctx, c.ID)
	}
	nets, _ := x.eng.ListNetworks(ctx, x.labels)
	for _, n := range nets {
		_ = x.eng.RemoveNetwork(ctx, n)
	}
	vols, _ := x.eng.ListVolumes(ctx, x.labels)
	for _, v := range vols {
		_ = volumes.Remove(x.eng.callCtx(ctx), v.Name, nil)
	}
	if x.image != "" {
		_ = exec.Command("podman", "rmi", "-f", x.image).Run()
	}
}

func (x *e2e) testInfo(t *testing.T) {
	info, err := x.eng.Info(x.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("info: %+v", info)
	facts, err := DetectHost()
	if err != nil {
		t.Fatal(err)
	}
	if !info.Rootless {
		t.Error("service is not rootless")
	}
	if info.OCIRuntime != facts.Runtime() {
		t.Errorf("OCI runtime = %q, want %q from the generated containers.conf", info.OCIRuntime, facts.Runtime())
	}
	if info.CgroupsV2 != facts.CgroupsV2Unified {
		t.Errorf("CgroupsV2 = %t, host facts say %t", info.CgroupsV2, facts.CgroupsV2Unified)
	}
	if info.Version == "" || info.APIVersion == "" {
		t.Errorf("no version in %+v", info)
	}
	if x.eng.ResourceLimitsSupported() != (!info.Rootless || info.CgroupsV2) {
		t.Error("ResourceLimitsSupported disagrees with Info")
	}
}

func (x *e2e) testConf(t *testing.T, runtimeDir string) {
	b, err := os.ReadFile(filepath.Join(runtimeDir, "containers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	facts, _ := DetectHost()
	if !strings.Contains(string(b), fmt.Sprintf("nofile=%d:%d", DefaultNofile(facts.NofileHard), DefaultNofile(facts.NofileHard))) {
		t.Errorf("generated containers.conf lacks the nofile default:\n%s", b)
	}
}

func (x *e2e) testImage(t *testing.T) {
	ref := "localhost/" + x.prefix + ":1"
	archive, err := busyboxArchive(ref)
	if err != nil {
		t.Fatal(err)
	}
	names, err := x.eng.LoadImage(x.ctx, bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, ref) {
		t.Fatalf("LoadImage names = %v, want %s", names, ref)
	}
	x.image = ref
	img, err := x.eng.ImageInspect(x.ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID == "" || img.Size == 0 || !slices.Contains(img.Names, ref) {
		t.Errorf("ImageInspect = %+v", img)
	}
	if !slices.Contains(img.Env, "PATH=/bin") {
		t.Errorf("Env = %v, want PATH=/bin", img.Env)
	}
	if img.Labels["org.example.role"] != "test" {
		t.Errorf("Labels = %v", img.Labels)
	}
	if !slices.Equal(img.Healthcheck, []string{"CMD-SHELL", "test -e /tmp/healthy"}) {
		t.Errorf("Healthcheck = %v", img.Healthcheck)
	}
	_, err = x.eng.ImageInspect(x.ctx, "localhost/does-not-exist-"+x.prefix+":1")
	if !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("missing image: err = %v, want ErrNotFound", err)
	}
}

func (x *e2e) testNetworkVolume(t *testing.T) {
	net := engine.NetworkSpec{Name: x.name("net"), Labels: x.labels}
	for i := 0; i < 2; i++ {
		if err := x.eng.EnsureNetwork(x.ctx, net); err != nil {
			t.Fatalf("EnsureNetwork #%d: %v", i+1, err)
		}
	}
	nets, err := x.eng.ListNetworks(x.ctx, x.labels)
	if err != nil || !slices.Contains(nets, net.Name) {
		t.Errorf("ListNetworks = %v, %v; want %s", nets, err, net.Name)
	}
	nets, _ = x.eng.ListNetworks(x.ctx, x.labelsWith("other", "x"))
	if len(nets) != 0 {
		t.Errorf("ListNetworks with a label nobody has = %v", nets)
	}

	vol := engine.VolumeSpec{Name: x.name("data"), Labels: x.labelsWith(engine.LabelVolume, "data")}
	created, err := x.eng.EnsureVolume(x.ctx, vol)
	if err != nil || !created {
		t.Fatalf("EnsureVolume first = %t, %v; want created", created, err)
	}
	created, err = x.eng.EnsureVolume(x.ctx, vol)
	if err != nil || created {
		t.Fatalf("EnsureVolume again = %t, %v; want existing", created, err)
	}
	vols, err := x.eng.ListVolumes(x.ctx, vol.Labels)
	if err != nil || len(vols) != 1 || vols[0].Name != vol.Name || vols[0].Mountpoint == "" || vols[0].CreatedAt.IsZero() {
		t.Errorf("ListVolumes = %+v, %v", vols, err)
	}
}

func (x *e2e) testContainer(t *testing.T) {
	ctx := x.ctx
	cfgDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, "hello.txt"), []byte("hello from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	facts, _ := DetectHost()

	spec := engine.ContainerSpec{
		Name:          x.name("web"),
		Image:         x.image,
		EntrypointSet: true,
		Entrypoint:    []string{"/bin/sh", "-c"},
		Command: []string{`mkdir -p /tmp/www && echo "served by web" > /tmp/www/index.html &&
			echo started && echo warming >&2 && exec httpd -f -p 8080 -h /tmp/www`},
		Env:      map[string]string{"GREETING": "hi there"},
		Hostname: "webhost",
		Mounts: []engine.MountSpec{
			{Type: "volume", Source: x.name("data"), Target: "/data"},
			{Type: "bind", Source: cfgDir, Target: "/cfg", ReadOnly: true},
			{Type: "tmpfs", Target: "/scratch", Options: []string{"size=1m"}},
		},
		Ports:       []engine.PortSpec{{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 8080}},
		Networks:    map[string][]string{x.name("net"): {"webalias"}},
		ExtraHosts:  []string{"hostgw:host-gateway"},
		Ulimits:     []engine.UlimitSpec{{Name: "nofile", Soft: 1024, Hard: 2048}},
		MemLimit:    64 << 20,
		PidsLimit:   200,
		StopTimeout: 2 * time.Second,
		Labels:      x.labelsWith(engine.LabelService, "web"),
	}
	id, err := x.eng.CreateContainer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	info := x.waitRunning(t, id)
	if info.Labels[engine.LabelService] != "web" || info.ImageID == "" || info.StartedAt.IsZero() {
		t.Errorf("InspectContainer = %+v", info)
	}
	// Podman's own healthcheck is off: it would need systemd timers.
	raw, err := containers.Inspect(x.eng.callCtx(ctx), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hc := raw.Config.Healthcheck; hc != nil && (len(hc.Test) == 0 || hc.Test[0] != "NONE") {
		t.Errorf("container healthcheck = %+v, want none", hc)
	}
	if !slices.Contains(info.Ports, engine.PortSpec{HostIP: "127.0.0.1", HostPort: port, ContainerPort: 8080, Protocol: "tcp"}) {
		t.Errorf("Ports = %+v, want 127.0.0.1:%d->8080/tcp", info.Ports, port)
	}

	run := func(cmd ...string) engine.ExecResult {
		t.Helper()
		res, err := x.eng.Exec(ctx, id, cmd)
		if err != nil {
			t.Fatalf("exec %q: %v", cmd, err)
		}
		return res
	}
	expect := func(res engine.ExecResult, code int, output string) {
		t.Helper()
		if res.ExitCode != code || res.Output != output {
			t.Errorf("exec = (%d, %q), want (%d, %q)", res.ExitCode, res.Output, code, output)
		}
	}
	expect(run("cat", "/cfg/hello.txt"), 0, "hello from the host\n")
	expect(run("sh", "-c", "exit 3"), 3, "")
	expect(run("sh", "-c", "echo out; sleep 0.1; echo err >&2"), 0, "out\nerr\n")
	expect(run("sh", "-c", `echo "$GREETING"; hostname`), 0, "hi there\nwebhost\n")
	if res := run("touch", "/cfg/x"); res.ExitCode == 0 {
		t.Errorf("bind mount is writable: %+v", res)
	}
	expect(run("sh", "-c", "echo kept > /data/f && cat /data/f"), 0, "kept\n")
	// The main process's limits (exec sessions get their own).
	limits := run("cat", "/proc/1/limits").Output
	for _, want := range []string{
		"Max open files            1024                 2048",
		fmt.Sprintf("Max processes             %-20d %-20d", DefaultNproc(facts.NprocHard), DefaultNproc(facts.NprocHard)),
	} {
		if !strings.Contains(limits, want) {
			t.Errorf("/proc/1/limits lacks %q:\n%s", want, limits)
		}
	}
	if res := run("sh", "-c", "grep ' /scratch ' /proc/mounts"); !strings.Contains(res.Output, "tmpfs") || !strings.Contains(res.Output, "size=1024k") {
		t.Errorf("tmpfs mount = %+v", res)
	}
	if res := run("cat", "/etc/hosts"); !strings.Contains(res.Output, "hostgw") || strings.Contains(res.Output, "host-gateway") {
		t.Errorf("/etc/hosts = %q, want hostgw resolved", res.Output)
	}
	if res := run("sh", "-c", "yes | head -c 20000"); len(res.Output) != execOutputLimit {
		t.Errorf("long output kept %d bytes, want %d", len(res.Output), execOutputLimit)
	}

	// Exec sessions' conmons linger only briefly (exit_command_delay).
	if delays := execExitDelays(id); len(delays) == 0 || slices.ContainsFunc(delays, func(d string) bool { return d != "10" }) {
		t.Errorf("exec conmon --exit-delay values = %v, want all 10", delays)
	}

	// Exec timeout.
	tctx, cancel := context.WithTimeout(ctx, time.Second)
	start := time.Now()
	res, err := x.eng.Exec(tctx, id, []string{"sh", "-c", "echo before; sleep 5"})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("exec past its deadline: err = %v, want timed out", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("exec timeout took %s", took)
	}
	if !strings.Contains(res.Output, "before") {
		t.Errorf("timed-out exec lost its output: %q", res.Output)
	}

	// PathExists: root fs, volume, tmpfs, bind; missing path.
	run("touch", "/scratch/ready", "/tmp/marker")
	for p, want := range map[string]bool{"/tmp/marker": true, "/data/f": true, "/scratch/ready": true, "/cfg/hello.txt": true, "/nope": false} {
		got, err := x.eng.PathExists(ctx, id, p)
		if err != nil || got != want {
			t.Errorf("PathExists(%s) = %t, %v; want %t", p, got, err, want)
		}
	}

	// Published port from the host.
	body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
	if body != "served by web\n" {
		t.Errorf("GET through the published port = %q", body)
	}

	// DNS by alias from a second container on the network.
	cid, err := x.eng.CreateContainer(ctx, engine.ContainerSpec{
		Name:     x.name("client"),
		Image:    x.image,
		Command:  []string{"sleep", "1000"},
		Networks: map[string][]string{x.name("net"): {"client"}},
		Labels:   x.labelsWith(engine.LabelService, "client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, cid)
	var got engine.ExecResult
	for i := 0; i < 20; i++ { // DNS registration can trail the start a little
		got, err = x.eng.Exec(ctx, cid, []string{"timeout", "5", "wget", "-q", "-O", "-", "http://webalias:8080/index.html"})
		if err == nil && got.ExitCode == 0 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil || got.ExitCode != 0 || got.Output != "served by web\n" {
		t.Errorf("wget webalias from client = %+v, %v", got, err)
	}

	// host-gateway reaches a service listening on the host's address.
	hostLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from the host\n") })}
	go hostSrv.Serve(hostLn)
	defer hostSrv.Close()
	// Static busybox does not read /etc/hosts, so take the address from it.
	gwIP := ""
	for _, line := range strings.Split(run("cat", "/etc/hosts").Output, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && slices.Contains(f[1:], "hostgw") {
			gwIP = f[0]
		}
	}
	hostURL := fmt.Sprintf("http://%s:%d/", gwIP, hostLn.Addr().(*net.TCPAddr).Port)
	if res := run("timeout", "5", "wget", "-q", "-O", "-", hostURL); res.ExitCode != 0 || res.Output != "hello from the host\n" {
		t.Errorf("wget %s (host-gateway) = %+v", hostURL, res)
	}

	// Removing keeps the volume; a new container sees the data.
	if err := x.eng.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := x.eng.InspectContainer(ctx, id); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("inspect after remove: err = %v, want ErrNotFound", err)
	}
	vols, err := x.eng.ListVolumes(ctx, x.labels)
	if err != nil || len(vols) != 1 {
		t.Fatalf("volume gone after RemoveContainer: %+v, %v", vols, err)
	}
	rid, err := x.eng.CreateContainer(ctx, engine.ContainerSpec{
		Name:    x.name("reader"),
		Image:   x.image,
		Command: []string{"sleep", "1000"},
		Mounts:  []engine.MountSpec{{Type: "volume", Source: x.name("data"), Target: "/data", ReadOnly: true}},
		Labels:  x.labelsWith(engine.LabelService, "reader"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, rid); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, rid)
	expect(exec2(t, x, rid, "cat", "/data/f"), 0, "kept\n")
	if res := exec2(t, x, rid, "touch", "/data/g"); res.ExitCode == 0 {
		t.Error("read-only volume is writable")
	}
	// PathExists on a stopped container.
	if err := x.eng.StopContainer(ctx, rid, time.Second); err != nil {
		t.Fatal(err)
	}
	if ok, err := x.eng.PathExists(ctx, rid, "/bin/busybox"); err != nil || !ok {
		t.Errorf("PathExists on a stopped container = %t, %v", ok, err)
	}
}

func exec2(t *testing.T, x *e2e, id string, cmd ...string) engine.ExecResult {
	t.Helper()
	res, err := x.eng.Exec(x.ctx, id, cmd)
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return res
}

// testConcurrent runs execs alongside other calls on one Engine, as health
// probes and the supervisor do.
func (x *e2e) testConcurrent(t *testing.T) {
	id := x.name("client")
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				want := fmt.Sprintf("g%d-%d", g, i)
				res, err := x.eng.Exec(x.ctx, id, []string{"echo", want})
				if err != nil || res.ExitCode != 0 || res.Output != want+"\n" {
					errs <- fmt.Errorf("exec %s = %+v, %v", want, res, err)
					return
				}
				if _, err := x.eng.ListContainers(x.ctx, x.labels); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (x *e2e) testStopKill(t *testing.T) {
	ctx := x.ctx
	// sleep as PID 1 ignores SIGTERM: Stop must kill after the timeout.
	id, err := x.eng.CreateContainer(ctx, engine.ContainerSpec{
		Name: x.name("stubborn"), Image: x.image, Command: []string{"sleep", "1000"},
		Labels: x.labelsWith(engine.LabelService, "stubborn"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, id)
	start := time.Now()
	if err := x.eng.StopContainer(ctx, id, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 1500*time.Millisecond || took > 10*time.Second {
		t.Errorf("stop took %s, want about 2s (timeout rounded up)", took)
	}
	info, err := x.eng.InspectContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Running || info.ExitCode != 137 || info.FinishedAt.IsZero() {
		t.Errorf("after stop: %+v, want exited 137", info)
	}
	if err := x.eng.StopContainer(ctx, id, time.Second); err != nil {
		t.Errorf("stopping a stopped container: %v", err)
	}

	// A process that exits by itself after a kill.
	kid, err := x.eng.CreateContainer(ctx, engine.ContainerSpec{
		Name: x.name("killed"), Image: x.image, Command: []string{"sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"},
		Init: true, StopSignal: "SIGTERM", Labels: x.labelsWith(engine.LabelService, "killed"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, kid); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, kid)
	if err := containers.Kill(x.eng.callCtx(ctx), kid, new(containers.KillOptions).WithSignal("SIGKILL")); err != nil {
		t.Fatal(err)
	}
	info = x.waitStopped(t, kid)
	// Podman says "stopped" until its cleanup process has run, then "exited".
	if (info.State != "exited" && info.State != "stopped") || info.ExitCode != 137 || info.FinishedAt.Before(info.StartedAt) {
		t.Errorf("after SIGKILL: %+v", info)
	}
	// The stop signal reaches the shell through init, which exits 42.
	if err := x.eng.StartContainer(ctx, kid); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, kid)
	time.Sleep(300 * time.Millisecond) // let the shell install its trap
	if err := x.eng.StopContainer(ctx, kid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if info, _ := x.eng.InspectContainer(ctx, kid); info.ExitCode != 42 {
		t.Errorf("graceful stop exit code = %d, want 42", info.ExitCode)
	}
}

func (x *e2e) testLogs(t *testing.T) {
	ctx := x.ctx
	id, err := x.eng.CreateContainer(ctx, engine.ContainerSpec{
		Name: x.name("logger"), Image: x.image,
		Command: []string{"sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2; sleep 1000"},
		Labels:  x.labelsWith(engine.LabelService, "logger"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	x.waitRunning(t, id)
	var all bytes.Buffer
	for i := 0; i < 50; i++ {
		all.Reset()
		if err := x.eng.Logs(ctx, id, engine.LogOptions{}, &all); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(all.String(), "oops") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if all.String() != "line1\nline2\nline3\nline4\nline5\noops\n" {
		t.Errorf("all logs = %q", all.String())
	}
	var tail bytes.Buffer
	if err := x.eng.Logs(ctx, id, engine.LogOptions{Tail: 2}, &tail); err != nil {
		t.Fatal(err)
	}
	if tail.String() != "line5\noops\n" {
		t.Errorf("tail 2 = %q", tail.String())
	}
	var since bytes.Buffer
	if err := x.eng.Logs(ctx, id, engine.LogOptions{Since: time.Now().Add(time.Hour)}, &since); err != nil {
		t.Fatal(err)
	}
	if since.Len() != 0 {
		t.Errorf("logs since the future = %q", since.String())
	}
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var follow bytes.Buffer
	if err := x.eng.Logs(fctx, id, engine.LogOptions{Follow: true, Tail: 1}, &follow); err != nil {
		t.Errorf("follow ended by ctx: %v, want nil", err)
	}
	if follow.String() != "oops\n" {
		t.Errorf("follow tail 1 = %q", follow.String())
	}
}

func (x *e2e) testList(t *testing.T) {
	all, err := x.eng.ListContainers(x.ctx, x.labels)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range all {
		names = append(names, c.Name)
	}
	for _, want := range []string{"client", "reader", "stubborn", "killed", "logger"} {
		if !slices.Contains(names, x.name(want)) {
			t.Errorf("ListContainers = %v, missing %s (stopped ones included)", names, x.name(want))
		}
	}
	one, err := x.eng.ListContainers(x.ctx, x.labelsWith(engine.LabelService, "stubborn"))
	if err != nil || len(one) != 1 || one[0].Name != x.name("stubborn") || one[0].Running || one[0].ExitCode != 137 {
		t.Errorf("ListContainers by two labels = %+v, %v", one, err)
	}
	other, err := x.eng.ListContainers(x.ctx, map[string]string{engine.LabelTest: x.prefix + "-nobody"})
	if err != nil || len(other) != 0 {
		t.Errorf("ListContainers for another label = %+v, %v", other, err)
	}
}

func (x *e2e) testNotFound(t *testing.T) {
	ctx := x.ctx
	missing := x.name("missing")
	if _, err := x.eng.InspectContainer(ctx, missing); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("InspectContainer: %v", err)
	}
	if err := x.eng.RemoveContainer(ctx, missing); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("RemoveContainer: %v", err)
	}
	if err := x.eng.StartContainer(ctx, missing); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("StartContainer: %v", err)
	}
	if err := x.eng.RemoveNetwork(ctx, missing); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("RemoveNetwork: %v", err)
	}
	if _, err := x.eng.PathExists(ctx, missing, "/bin"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("PathExists: %v", err)
	}
	if _, err := x.eng.Exec(ctx, missing, []string{"true"}); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("Exec: %v", err)
	}
}

func (x *e2e) waitRunning(t *testing.T, id string) engine.ContainerInfo {
	t.Helper()
	var info engine.ContainerInfo
	var err error
	for i := 0; i < 100; i++ {
		if info, err = x.eng.InspectContainer(x.ctx, id); err == nil && info.Running {
			return info
		}
		time.Sleep(100 * time.Millisecond)
	}
	var logs bytes.Buffer
	_ = x.eng.Logs(x.ctx, id, engine.LogOptions{}, &logs)
	t.Fatalf("container %s not running: %+v, %v; logs:\n%s", id, info, err, logs.String())
	return info
}

func (x *e2e) waitStopped(t *testing.T, id string) engine.ContainerInfo {
	t.Helper()
	for i := 0; i < 100; i++ {
		if info, err := x.eng.InspectContainer(x.ctx, id); err == nil && !info.Running {
			return info
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %s did not stop", id)
	return engine.ContainerInfo{}
}

// busyboxArchive builds a docker-archive holding one image: the host's
// static busybox with its applets, PATH=/bin, a label and a HEALTHCHECK.
func busyboxArchive(ref string) ([]byte, error) {
	bb := os.Getenv("OUTPOST_E2E_BUSYBOX")
	if bb == "" {
		bb = "/bin/busybox"
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return nil, fmt.Errorf("reading a static busybox (apt-get install busybox-static, or set OUTPOST_E2E_BUSYBOX): %w", err)
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}

	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	now := time.Unix(1700000000, 0)
	for _, d := range []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"etc/", 0o755}, {"tmp/", 0o1777}, {"data/", 0o755}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: now}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerSum := sha256.Sum256(layer.Bytes())

	config, err := json.Marshal(map[string]any{
		"architecture": runtimeArch(),
		"os":           "linux",
		"created":      now.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"Env":    []string{"PATH=/bin"},
			"Cmd":    []string{"sh"},
			"Labels": map[string]string{"org.example.role": "test"},
			"Healthcheck": map[string]any{
				"Test":     []string{"CMD-SHELL", "test -e /tmp/healthy"},
				"Interval": int64(time.Second),
			},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(layerSum[:])}},
	})
	if err != nil {
		return nil, err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   configName,
		"RepoTags": []string{strings.TrimPrefix(ref, "localhost/")},
		"Layers":   []string{"layer.tar"},
	}})
	if err != nil {
		return nil, err
	}

	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{"layer.tar", layer.Bytes()}, {configName, config}, {"manifest.json", manifest}} {
		if err := aw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return nil, err
		}
		if _, err := aw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func runtimeArch() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil && strings.HasPrefix(unix.ByteSliceToString(u.Machine[:]), "aarch64") {
		return "arm64"
	}
	return "amd64"
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	var lastErr error
	for i := 0; i < 30; i++ {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			lastErr = fmt.Errorf("status %s", resp.Status)
		} else {
			lastErr = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("GET %s: %v", url, lastErr)
	return ""
}

// execExitDelays returns the --exit-delay of every exec conmon of a
// container still running on this host.
func execExitDelays(containerID string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.HasSuffix(args[0], "conmon") || !slices.Contains(args, containerID) {
			continue
		}
		if i := slices.Index(args, "--exit-delay"); i >= 0 && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testWriter sends slog output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
