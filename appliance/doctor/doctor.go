// Package doctor checks the host prerequisites for running appliances on
// rootless Podman and says how to fix each one that is missing.
//
// It only reads: files under Options.Root, `podman --version`, and
// `podman info` once Podman's storage exists (never before: a first
// `podman info` would create the storage with whatever driver Podman
// picks). It imports the standard library only.
package doctor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Status is a check's outcome.
type Status string

// Check outcomes. WARN works but is degraded or unsupported; FAIL blocks
// running appliances.
const (
	StatusPass Status = "PASS"
	StatusWarn Status = "WARN"
	StatusFail Status = "FAIL"
)

// Check is one prerequisite's result.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix is one line saying what to do; empty on PASS.
	Fix string `json:"fix,omitempty"`
}

// Report is every check's result, in a fixed order.
type Report struct {
	Checks []Check `json:"checks"`
}

// OK reports whether no check failed (warnings are allowed).
func (r Report) OK() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return false
		}
	}
	return true
}

// Runner runs a command and returns its standard output.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// Options configure Run. The zero value checks the real host for the
// current user.
type Options struct {
	// Root prefixes /etc, /dev, /sys, /proc, /run and the binary
	// directories; default "/". Tests point it at a fake tree.
	Root string
	// Run runs commands (podman); default os/exec with a 30s timeout.
	Run Runner
	// User is the user to check for; default the current user.
	User *User
	// Home is the user's home directory (for ~/.config and
	// ~/.local/share/containers); default os.UserHomeDir.
	Home string
	// Getenv reads the environment (XDG_RUNTIME_DIR, XDG_CONFIG_HOME,
	// PATH); default os.Getenv.
	Getenv func(string) string
	// HardLimit returns a hard rlimit (syscall.RLIMIT_NOFILE or rlimitNproc);
	// default syscall.Getrlimit.
	HardLimit func(resource int) (uint64, error)
	// Logger receives debug detail about commands run; default discards.
	Logger *slog.Logger
}

// User identifies the user appliances will run as.
type User struct {
	UID  int
	GIDs []int
	Name string
}

// MinPodman is the oldest Podman Outpost supports.
var MinPodman = [3]int{4, 3, 0}

// Ulimit defaults, kept equal to engine/podman's DefaultNofile and
// DefaultNproc (that package may not be imported here).
const (
	maxDefaultNofile = 1048576
	maxDefaultNproc  = 4194304
	// recommendedNofile is what databases commonly ask for.
	recommendedNofile = 65536
	// minSubIDs is the range size images with high IDs need.
	minSubIDs = 65536
)

// rlimitNproc is RLIMIT_NPROC on Linux (package syscall lacks the name).
const rlimitNproc = 6

// binDirs are searched for helper binaries besides PATH; many are in sbin
// directories that ordinary users do not have on PATH.
var binDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/libexec/podman", "/usr/lib/podman"}

// Run checks every prerequisite and returns the report. It never fails: a
// check that cannot tell says so in its own result.
func Run(ctx context.Context, opts Options) Report {
	d := newDoctor(opts)
	var r Report
	add := func(c Check) { r.Checks = append(r.Checks, c) }

	podman := d.checkPodman(ctx)
	add(podman.check)
	add(d.checkUser())
	add(d.checkSubIDs("subuid", "/etc/subuid", "--add-subuids"))
	add(d.checkSubIDs("subgid", "/etc/subgid", "--add-subgids"))
	add(d.checkIDMapper("newuidmap"))
	add(d.checkIDMapper("newgidmap"))
	add(d.checkTun())
	add(d.checkNetworkHelper(podman.version))
	add(d.checkNameResolution(ctx))
	add(d.checkInit())
	add(d.checkCgroups())
	add(d.checkUlimits())
	add(d.checkStorage(ctx, podman.path))
	add(d.checkRuntimeDir())
	add(d.checkOverlay())
	return r
}

type doctor struct {
	Options
	User
}

func newDoctor(o Options) *doctor {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Run == nil {
		o.Run = execRunner
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.HardLimit == nil {
		o.HardLimit = func(r int) (uint64, error) {
			var rl syscall.Rlimit
			err := syscall.Getrlimit(r, &rl)
			return rl.Max, err
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.User == nil {
		u := &User{UID: os.Getuid(), GIDs: []int{os.Getgid()}}
		if gs, err := os.Getgroups(); err == nil {
			u.GIDs = append(u.GIDs, gs...)
		}
		if cu, err := user.Current(); err == nil {
			u.Name = cu.Username
		}
		o.User = u
	}
	if o.Home == "" {
		o.Home, _ = os.UserHomeDir()
	}
	return &doctor{Options: o, User: *o.User}
}

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// path maps an absolute host path under Root.
func (d *doctor) path(p string) string { return filepath.Join(d.Root, p) }

// find locates a binary: on the real root through PATH first, then in the
// usual directories.
func (d *doctor) find(name string) string {
	if d.Root == "/" {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	for _, dir := range binDirs {
		p := d.path(filepath.Join(dir, name))
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

type podmanFacts struct {
	check   Check
	path    string
	version [3]int
}

var versionRE = regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`)

func parseVersion(s string) ([3]int, bool) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return [3]int{}, false
	}
	var v [3]int
	for i := 0; i < 3; i++ {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v, true
}

func versionLess(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

func fmtVersion(v [3]int) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }

const installPodman = "install Podman and its rootless helpers: apt-get install podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit (dnf install podman on Fedora/RHEL)"

func (d *doctor) checkPodman(ctx context.Context) podmanFacts {
	f := podmanFacts{check: Check{Name: "podman"}}
	f.path = d.find("podman")
	if f.path == "" {
		f.check.Status, f.check.Detail, f.check.Fix = StatusFail, "podman not found", installPodman
		return f
	}
	out, err := d.Run(ctx, f.path, "--version")
	if err != nil {
		d.Logger.Debug("podman --version failed", "error", err)
		f.check.Status, f.check.Detail = StatusFail, fmt.Sprintf("%s does not run: %v", f.path, err)
		f.check.Fix = "reinstall Podman: " + installPodman
		return f
	}
	v, ok := parseVersion(string(out))
	if !ok {
		f.check.Status, f.check.Detail = StatusWarn, fmt.Sprintf("%s: cannot read a version from %q", f.path, strings.TrimSpace(string(out)))
		f.check.Fix = "check that " + f.path + " is Podman"
		return f
	}
	f.version = v
	if versionLess(v, MinPodman) {
		f.check.Status = StatusFail
		f.check.Detail = fmt.Sprintf("%s is version %s, older than %s", f.path, fmtVersion(v), fmtVersion(MinPodman))
		f.check.Fix = "upgrade Podman to " + fmtVersion(MinPodman) + " or later (Debian 12 ships 4.3.1)"
		return f
	}
	f.check.Status, f.check.Detail = StatusPass, fmt.Sprintf("%s version %s", f.path, fmtVersion(v))
	return f
}

func (d *doctor) checkUser() Check {
	c := Check{Name: "rootless user"}
	if d.UID == 0 {
		c.Status, c.Detail = StatusWarn, "running as root: rootful Podman works but rootless is the supported mode"
		c.Fix = "run outpost as an unprivileged user with subuid/subgid ranges (useradd -m adds them)"
		return c
	}
	c.Status, c.Detail = StatusPass, fmt.Sprintf("running as %s (uid %d)", d.Name, d.UID)
	return c
}

// checkSubIDs sums the ranges /etc/subuid or /etc/subgid give the user,
// listed by name or by numeric id.
func (d *doctor) checkSubIDs(name, file, flag string) Check {
	c := Check{Name: name}
	if d.UID == 0 {
		c.Status, c.Detail = StatusPass, "not needed when running as root"
		return c
	}
	fix := fmt.Sprintf("usermod %s 100000-165535 %s", flag, d.Name)
	data, err := os.ReadFile(d.path(file))
	if err != nil {
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("cannot read %s: %v", file, err), fix
		return c
	}
	uid := strconv.Itoa(d.UID)
	var total uint64
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		parts := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(parts) != 3 || (parts[0] != d.Name && parts[0] != uid) {
			continue
		}
		if n, err := strconv.ParseUint(parts[2], 10, 32); err == nil {
			total += n
		}
	}
	switch {
	case total == 0:
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("no range for %s in %s", d.Name, file), fix
	case total < minSubIDs:
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("%d ids for %s in %s; images with ids above that fail", total, d.Name, file)
		c.Fix = fix
	default:
		c.Status, c.Detail = StatusPass, fmt.Sprintf("%d ids for %s in %s", total, d.Name, file)
	}
	return c
}

// checkIDMapper checks that newuidmap/newgidmap exist and may set mappings:
// setuid root or carrying file capabilities.
func (d *doctor) checkIDMapper(name string) Check {
	c := Check{Name: name}
	p := d.find(name)
	if p == "" {
		c.Status, c.Detail, c.Fix = StatusFail, name+" not found", "apt-get install uidmap (dnf install shadow-utils)"
		return c
	}
	fi, err := os.Stat(p)
	if err != nil {
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("%s: %v", p, err), "apt-get install --reinstall uidmap"
		return c
	}
	if fi.Mode()&os.ModeSetuid != 0 {
		c.Status, c.Detail = StatusPass, p+" is setuid"
		return c
	}
	if hasFileCaps(p) {
		c.Status, c.Detail = StatusPass, p+" has file capabilities"
		return c
	}
	c.Status, c.Detail = StatusFail, p+" is neither setuid nor has file capabilities, so rootless Podman cannot map ids"
	c.Fix = fmt.Sprintf("chmod u+s %s (or setcap cap_setuid+ep / cap_setgid+ep as the package does)", strings.TrimPrefix(p, strings.TrimSuffix(d.Root, "/")))
	return c
}

func hasFileCaps(p string) bool {
	buf := make([]byte, 64)
	n, err := syscall.Getxattr(p, "security.capability", buf)
	return err == nil && n > 0
}

func (d *doctor) checkTun() Check {
	c := Check{Name: "/dev/net/tun"}
	fi, err := os.Stat(d.path("/dev/net/tun"))
	if err != nil {
		c.Status, c.Detail, c.Fix = StatusFail, "missing: rootless networking (slirp4netns, pasta) needs it", "modprobe tun (and add tun to /etc/modules)"
		return c
	}
	if d.canReadWrite(fi) {
		c.Status, c.Detail = StatusPass, fmt.Sprintf("mode %04o, readable and writable by uid %d", fi.Mode().Perm(), d.UID)
		if d.UID == 0 && fi.Mode().Perm()&0o006 != 0o006 {
			c.Status = StatusWarn
			c.Detail = fmt.Sprintf("mode %04o: root can open it, rootless users cannot", fi.Mode().Perm())
			c.Fix = "chmod 0666 /dev/net/tun (persist with a udev rule: KERNEL==\"tun\", MODE=\"0666\")"
		}
		return c
	}
	c.Status = StatusFail
	c.Detail = fmt.Sprintf("mode %04o: uid %d cannot open it, so rootless networking fails with \"open /dev/net/tun: Permission denied\"", fi.Mode().Perm(), d.UID)
	c.Fix = "chmod 0666 /dev/net/tun (persist with a udev rule: KERNEL==\"tun\", MODE=\"0666\")"
	return c
}

// canReadWrite applies the permission bits for the checked user.
func (d *doctor) canReadWrite(fi os.FileInfo) bool {
	if d.UID == 0 {
		return true
	}
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) == d.UID {
		return perm&0o600 == 0o600
	}
	if ok {
		for _, g := range d.GIDs {
			if int(st.Gid) == g {
				return perm&0o060 == 0o060
			}
		}
	}
	return perm&0o006 == 0o006
}

func (d *doctor) checkNetworkHelper(podmanVersion [3]int) Check {
	c := Check{Name: "slirp4netns"}
	if p := d.find("slirp4netns"); p != "" {
		c.Status, c.Detail = StatusPass, p
		return c
	}
	// Podman 5 uses pasta for rootless networking by default.
	if podmanVersion[0] >= 5 {
		if p := d.find("pasta"); p != "" {
			c.Status, c.Detail = StatusPass, "slirp4netns not found; Podman 5 uses pasta: "+p
			return c
		}
	}
	c.Status, c.Detail, c.Fix = StatusFail, "slirp4netns not found: rootless containers get no network", "apt-get install slirp4netns"
	return c
}

// aardvarkKeepsSockets is the first aardvark-dns that keeps its sockets
// open when it reloads its configuration.
var aardvarkKeepsSockets = [3]int{1, 11, 0}

// cniDNSDirs are where CNI plugins (dnsname among them) are installed.
var cniDNSDirs = []string{"/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"}

// checkNameResolution checks that an appliance's containers can resolve
// each other by service name: netavark with aardvark-dns, or CNI with its
// dnsname plugin. Debian installs podman's network stack only as
// recommendations; without netavark, Podman falls back to CNI and records
// that choice in the user's storage for good. An aardvark-dns older than
// 1.11 works but drops lookups around every container start or removal on
// the network, which upgrades do while the other containers serve.
func (d *doctor) checkNameResolution(ctx context.Context) Check {
	c := Check{Name: "container DNS"}
	const install = "apt-get install netavark aardvark-dns (dnf install netavark aardvark-dns on Fedora/RHEL)"
	netavark, aardvark := d.find("netavark"), d.find("aardvark-dns")
	recorded := ""
	if d.Home != "" {
		if b, err := os.ReadFile(filepath.Join(d.Home, ".local/share/containers/storage/defaultNetworkBackend")); err == nil {
			recorded = strings.TrimSpace(string(b))
		}
	}
	dnsname := ""
	for _, dir := range cniDNSDirs {
		if p := d.path(filepath.Join(dir, "dnsname")); exists(p) {
			dnsname = p
		}
	}
	switch {
	case recorded == "cni" && dnsname != "":
		c.Status, c.Detail = StatusPass, "CNI with the dnsname plugin ("+dnsname+")"
	case recorded == "cni":
		c.Status = StatusFail
		c.Detail = "this user's Podman uses CNI (recorded in ~/.local/share/containers/storage/defaultNetworkBackend) without the dnsname plugin: containers cannot resolve each other by service name"
		c.Fix = "install netavark and aardvark-dns (" + install + "), then, while this user has no containers, write netavark into that file"
		if netavark != "" && aardvark != "" {
			c.Fix = "netavark is installed: while this user has no containers (podman ps -a), run: echo netavark > ~/.local/share/containers/storage/defaultNetworkBackend"
		}
	case netavark != "" && aardvark != "":
		c.Status, c.Detail = StatusPass, "netavark with aardvark-dns ("+aardvark+")"
		out, err := d.Run(ctx, aardvark, "--version")
		if err != nil {
			d.Logger.Debug("aardvark-dns --version failed", "error", err)
			break
		}
		if v, ok := parseVersion(string(out)); ok && versionLess(v, aardvarkKeepsSockets) {
			c.Status = StatusWarn
			c.Detail = fmt.Sprintf("aardvark-dns %s (%s) closes and reopens its sockets whenever a container starts or stops on the network: a name lookup sent in those few milliseconds is refused or lost (fixed in aardvark-dns %s, containers/aardvark-dns#389)", fmtVersion(v), aardvark, fmtVersion(aardvarkKeepsSockets))
			c.Fix = "services that call each other by name should retry a lookup that fails temporarily, as the demo does (docs/architecture.md); aardvark-dns " + fmtVersion(aardvarkKeepsSockets) + " or later (Debian 13) removes the cause"
		}
	case netavark != "":
		c.Status, c.Detail, c.Fix = StatusFail, "netavark without aardvark-dns: containers cannot resolve each other by service name", install
	default:
		c.Status, c.Detail, c.Fix = StatusFail, "netavark not found: Podman would fall back to CNI and containers could not resolve each other by service name", install
	}
	return c
}

// checkInit checks for the init binary Podman runs as PID 1 of containers
// that ask for one (Compose `init: true`).
func (d *doctor) checkInit() Check {
	c := Check{Name: "container init"}
	for _, name := range []string{"catatonit", "tini", "dumb-init"} {
		if p := d.find(name); p != "" {
			c.Status, c.Detail = StatusPass, p
			return c
		}
	}
	c.Status = StatusWarn
	c.Detail = "catatonit not found: services with `init: true` fail to start"
	c.Fix = "apt-get install catatonit (dnf install catatonit)"
	return c
}

func (d *doctor) checkCgroups() Check {
	c := Check{Name: "cgroups"}
	unified := exists(d.path("/sys/fs/cgroup/cgroup.controllers"))
	crun, runc := d.find("crun"), d.find("runc")
	switch {
	case unified && crun == "" && runc == "":
		c.Status, c.Detail, c.Fix = StatusFail, "cgroups v2 (unified), but no OCI runtime found", "apt-get install crun (or runc)"
	case unified && crun != "":
		c.Status, c.Detail = StatusPass, "cgroups v2 (unified): Outpost will use crun; memory and pids limits are enforced"
	case unified:
		c.Status, c.Detail = StatusPass, "cgroups v2 (unified): Outpost will use runc (crun not found); memory and pids limits are enforced"
	case runc != "":
		c.Status = StatusWarn
		c.Detail = "cgroups v1 (or hybrid): Outpost will use runc (crun refuses this mode); rootless containers get no memory or pids limits"
		c.Fix = "to enforce limits, boot with systemd.unified_cgroup_hierarchy=1 (cgroups v2)"
	case crun != "":
		c.Status, c.Detail, c.Fix = StatusFail, "cgroups v1 (or hybrid) with only crun, which refuses this mode", "apt-get install runc"
	default:
		c.Status, c.Detail, c.Fix = StatusFail, "cgroups v1 (or hybrid) and no OCI runtime found", "apt-get install runc"
	}
	return c
}

func (d *doctor) checkUlimits() Check {
	c := Check{Name: "ulimits"}
	nofile, err := d.HardLimit(syscall.RLIMIT_NOFILE)
	if err != nil {
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("cannot read the hard nofile limit: %v", err)
		return c
	}
	nproc, err := d.HardLimit(rlimitNproc)
	if err != nil {
		c.Status, c.Detail = StatusWarn, fmt.Sprintf("cannot read the hard nproc limit: %v", err)
		return c
	}
	nprocNote := ""
	if pm := readUint(d.path("/proc/sys/kernel/pid_max")); pm > 0 && pm < nproc {
		// Rootless Podman lowers its own nproc limit to pid_max.
		nproc = pm
		nprocNote = " (kernel.pid_max)"
	}
	useNofile, useNproc := clamp(nofile, maxDefaultNofile), clamp(nproc, maxDefaultNproc)
	c.Detail = fmt.Sprintf("hard nofile %s, nproc %s%s; containers get nofile=%d:%d nproc=%d:%d unless a service sets its own",
		fmtLimit(nofile), fmtLimit(nproc), nprocNote, useNofile, useNofile, useNproc, useNproc)
	if nofile < recommendedNofile {
		c.Status = StatusWarn
		c.Detail += fmt.Sprintf("; services asking for nofile above %d will be refused", nofile)
		c.Fix = fmt.Sprintf("raise the hard nofile limit of %s: LimitNOFILE=1048576 in its systemd unit, or \"%s hard nofile 1048576\" in /etc/security/limits.conf", d.Name, d.Name)
		return c
	}
	c.Status = StatusPass
	return c
}

func clamp(v, max uint64) uint64 {
	if v == 0 || v > max {
		return max
	}
	return v
}

func fmtLimit(v uint64) string {
	if v == ^uint64(0) {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// checkStorage finds the storage driver: from storage.conf (user's first,
// then the system's), or from `podman info` when storage already exists.
func (d *doctor) checkStorage(ctx context.Context, podman string) Check {
	c := Check{Name: "storage driver"}
	userConf := d.userStorageConf()
	fix := fmt.Sprintf("put [storage] driver = \"overlay\" in %s (before Podman's first use, or run `podman system reset` afterwards: it deletes all images and containers)", userConf)
	if d.UID == 0 {
		userConf = ""
		fix = "put [storage] driver = \"overlay\" in /etc/containers/storage.conf"
	}
	var driver, source string
	for _, p := range []string{userConf, d.path("/etc/containers/storage.conf"), d.path("/usr/share/containers/storage.conf")} {
		if p == "" {
			continue
		}
		if drv := storageDriver(p); drv != "" {
			driver, source = drv, p
			break
		}
	}
	if driver == "" && podman != "" && d.storageExists() {
		out, err := d.Run(ctx, podman, "info", "--format", "{{.Store.GraphDriverName}}")
		if err != nil {
			d.Logger.Debug("podman info failed", "error", err)
		} else {
			driver, source = strings.TrimSpace(string(out)), "podman info"
		}
	}
	switch driver {
	case "":
		c.Status, c.Detail, c.Fix = StatusWarn, "no storage driver configured: rootless Podman may fall back to the slow vfs driver", fix
	case "vfs":
		c.Status, c.Detail, c.Fix = StatusWarn, fmt.Sprintf("vfs (from %s): every layer is a full copy; slow and large", source), fix
	default:
		c.Status, c.Detail = StatusPass, fmt.Sprintf("%s (from %s)", driver, source)
	}
	return c
}

func (d *doctor) userStorageConf() string {
	if x := d.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "containers", "storage.conf")
	}
	return filepath.Join(d.Home, ".config", "containers", "storage.conf")
}

func (d *doctor) storageExists() bool {
	if d.UID == 0 {
		return exists(d.path("/var/lib/containers/storage"))
	}
	return exists(filepath.Join(d.Home, ".local", "share", "containers", "storage"))
}

var driverRE = regexp.MustCompile(`^\s*driver\s*=\s*["']([^"']*)["']`)

// storageDriver reads driver = "..." from a storage.conf's [storage] table.
func storageDriver(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			table = strings.Trim(line, "[] ")
			continue
		}
		if table != "storage" {
			continue
		}
		if m := driverRE.FindStringSubmatch(line); m != nil {
			return m[1]
		}
	}
	return ""
}

func (d *doctor) checkRuntimeDir() Check {
	c := Check{Name: "XDG_RUNTIME_DIR"}
	if d.UID == 0 {
		c.Status, c.Detail = StatusPass, "not needed when running as root"
		return c
	}
	fix := fmt.Sprintf("start outpost from a login session or its systemd unit (loginctl enable-linger %s), or set XDG_RUNTIME_DIR=/run/user/%d to a 0700 directory owned by %s", d.Name, d.UID, d.Name)
	dir := d.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		c.Status, c.Detail, c.Fix = StatusFail, "not set: rootless Podman keeps its runtime state there", fix
		return c
	}
	fi, err := os.Stat(d.path(dir))
	if err != nil || !fi.IsDir() {
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("%s does not exist", dir), fix
		return c
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if ok && int(st.Uid) != d.UID {
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("%s belongs to uid %d, not %d", dir, st.Uid, d.UID), fix
		return c
	}
	if fi.Mode().Perm()&0o700 != 0o700 {
		c.Status, c.Detail, c.Fix = StatusFail, fmt.Sprintf("%s is not writable (mode %04o)", dir, fi.Mode().Perm()), fix
		return c
	}
	c.Status, c.Detail = StatusPass, dir
	return c
}

// checkOverlay: rootless overlay is native from Linux 5.13, else it needs
// fuse-overlayfs.
func (d *doctor) checkOverlay() Check {
	c := Check{Name: "overlay"}
	release := strings.TrimSpace(readString(d.path("/proc/sys/kernel/osrelease")))
	v, ok := parseVersion(release)
	native := ok && !versionLess(v, [3]int{5, 13, 0})
	fuse := d.find("fuse-overlayfs")
	switch {
	case native && fuse != "":
		c.Status, c.Detail = StatusPass, fmt.Sprintf("kernel %s supports rootless overlay natively; fuse-overlayfs also present (%s)", release, fuse)
	case native:
		c.Status, c.Detail = StatusPass, fmt.Sprintf("kernel %s supports rootless overlay natively", release)
	case fuse != "":
		c.Status, c.Detail = StatusPass, fmt.Sprintf("kernel %s needs fuse-overlayfs for rootless overlay: %s", release, fuse)
	case d.UID == 0:
		c.Status, c.Detail = StatusPass, "root uses kernel overlay"
	default:
		c.Status, c.Detail = StatusFail, fmt.Sprintf("kernel %q has no rootless overlay and fuse-overlayfs is missing: Podman would use vfs", release)
		c.Fix = "apt-get install fuse-overlayfs"
	}
	return c
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readString(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(b)
}

func readUint(p string) uint64 {
	n, err := strconv.ParseUint(strings.TrimSpace(readString(p)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
