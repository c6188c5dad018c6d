//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashDaemon runs an upgrade or rollback through the daemon with the
// daemon told to kill itself at step (0: no crash). It reports whether the
// daemon died; if not, the operation ran to its end and r says how.
func (a *upgradeApp) crashDaemon(t *testing.T, d *daemonProc, step int, args ...string) (r result, killed bool) {
	t.Helper()
	var env []string
	if step > 0 {
		env = []string{fmt.Sprintf("OUTPOST_UPGRADE_CRASH_AT=%d", step)}
	}
	r = a.h.runEnv(5*time.Minute, env, args...)
	if r.code == 0 {
		return r, false
	}
	// The client hears of the daemon's death as an ended stream, or, when
	// the daemon died before answering at all, as a failed call.
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if d.exited() {
			return r, true
		}
	}
	if strings.Contains(r.stderr, "without a result") {
		t.Fatalf("step %d: the client says the daemon ended, but it runs:\n%s", step, r.stderr)
	}
	return r, false
}

// restartDaemon starts the daemon again and waits until it has settled
// what the killed one left open and started the appliance.
func (a *upgradeApp) restartDaemon(t *testing.T) *daemonProc {
	t.Helper()
	h := a.h
	started := strings.Count(h.logs(), `msg="appliance healthy"`)
	d := h.daemon("--name", a.name)
	eventually(t, 3*time.Minute, "restarted daemon healthy", func() error {
		if d.exited() {
			t.Fatalf("daemon exited:\n%s", h.logs())
		}
		if strings.Count(h.logs(), `msg="appliance healthy"`) == started {
			return fmt.Errorf("the daemon has not started the appliance yet")
		}
		return allHealthy(h.status("--name", a.name), 2)
	})
	return d
}

// assertServing checks that exactly one copy of each service runs (api on
// tag), the proxy answers with greeting, revision rev is the active one
// and the store's volume is as it was.
func (a *upgradeApp) assertServing(t *testing.T, tag, greeting string, rev int64, volume, sum string) {
	t.Helper()
	a.assertOn(t, tag, greeting)
	url := fmt.Sprintf("http://127.0.0.1:%d/api/hello", a.port)
	eventually(t, 30*time.Second, "greeting "+greeting+" through the proxy", func() error {
		code, body, err := httpGet(url)
		if err != nil || code != 200 || !strings.Contains(body, "greeting "+greeting) {
			return fmt.Errorf("%d %v %s", code, err, body)
		}
		return nil
	})
	if hist := a.history(t); hist[rev] != "active" {
		t.Fatalf("history %v, want revision %d active", hist, rev)
	}
	if got := volumeSum(t, volume); got != sum {
		t.Fatal("the store's volume contents changed")
	}
}

var failedStep = regexp.MustCompile(`step (\d+) \([^)]*\) failed`)

// Killing the daemon at every journaled step of (a) the automatic
// rollback after a failed upgrade and (b) `outpost rollback`, then
// starting it again, ends with one serving copy of each service, the
// proxy on it, the expected revision active and the volume intact.
func TestUpgradeCrashDuringRollback(t *testing.T) {
	h := newHarness(t)
	a := newUpgradeApp(t, h)
	v1 := a.file("v1.yml", "1", "v1", "", "10s")
	v2 := a.file("v2.yml", "2", "v2", "", "10s")
	// The job runs in the apply step, after the api's new copy took the
	// proxy's traffic: the undo steps have all of that to take back.
	bad := a.file("bad.yml", "2", "bad", fmt.Sprintf(upgradeJob, `["fail"]`), "10s")
	d := h.daemon("-f", v1)
	volume := a.name + "_store-data"
	eventually(t, 3*time.Minute, "v1 deployed", func() error {
		if d.exited() {
			t.Fatalf("daemon exited:\n%s", h.logs())
		}
		if !volumeExists(volume) {
			return fmt.Errorf("no volume %s yet", volume)
		}
		return allHealthy(h.status("--name", a.name), 2)
	})
	writeVolumeFiles(t, volume)
	sum := volumeSum(t, volume)
	a.assertServing(t, "1", "v1", 1, volume, sum)

	// (a) The failed upgrade, once without a crash: which step fails.
	r, killed := a.crashDaemon(t, d, 0, "upgrade", "-f", bad, "--skip-backup")
	if killed || r.code == 0 || !strings.Contains(r.stderr, "rolled back to revision 1") {
		t.Fatalf("failing upgrade: exit %d\n%s", r.code, r.stderr)
	}
	m := failedStep.FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no failed step named:\n%s", r.stderr)
	}
	failing, _ := strconv.Atoi(m[1])
	a.assertServing(t, "1", "v1", 1, volume, sum)
	undone := 0
	for step := failing + 1; ; step++ {
		if step > failing+10 {
			t.Fatal("the rollback never completed")
		}
		r, killed := a.crashDaemon(t, d, step, "upgrade", "-f", bad, "--skip-backup")
		if !killed {
			if r.code == 0 || !strings.Contains(r.stderr, "rolled back to revision 1") {
				t.Fatalf("step %d: failing upgrade: exit %d\n%s", step, r.code, r.stderr)
			}
			t.Logf("step %d: past the rollback's last step; it completed", step)
			break
		}
		undone++
		d = a.restartDaemon(t)
		a.assertServing(t, "1", "v1", 1, volume, sum)
		t.Logf("undo step %d: killed, recovered to revision 1, proxy on it, volume intact", step)
	}
	if undone < 3 {
		t.Fatalf("only %d undo steps were killed, want the proxy, the copy beside and the apply undone", undone)
	}

	// (b) `outpost rollback` from revision 2 to 1, killed at every step:
	// recovery returns to revision 2; past the last step it completes.
	h.must(5*time.Minute, "upgrade", "-f", v2)
	hist := a.history(t)
	var rev2 int64
	for id, st := range hist {
		if st == "active" {
			rev2 = id
		}
	}
	a.assertServing(t, "2", "v2", rev2, volume, sum)
	for step := 1; ; step++ {
		if step > 15 {
			t.Fatal("the rollback never completed")
		}
		r, killed := a.crashDaemon(t, d, step, "rollback")
		if !killed {
			if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("rolled back: revision %d → 1", rev2)) {
				t.Fatalf("step %d: rollback: exit %d\n%s\n%s", step, r.code, r.stdout, r.stderr)
			}
			t.Logf("step %d: past the rollback's last step; it completed", step)
			break
		}
		d = a.restartDaemon(t)
		a.assertServing(t, "2", "v2", rev2, volume, sum)
		t.Logf("rollback step %d: killed, recovered to revision %d, proxy on it, volume intact", step, rev2)
	}
	a.assertServing(t, "1", "v1", 1, volume, sum)
}
