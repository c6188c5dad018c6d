// Command bundle is Outpost's air-gap load benchmark: in one run it loads
// the same set of images (default 4 images, 640 MiB in all, generated
// offline from a fixed seed) several rounds each, from a clean store, with
//
//   - podman: `podman load -i IMG.tar` for each image's docker-archive, one
//     after the other (what an operator does with a directory of archives);
//   - podman-par: the same `podman load` commands all at once;
//   - podman-same: `podman load -i` one after the other of the very
//     archives the bundle carries (extracted from it once, untimed), which
//     Outpost writes so Podman loads them faster (see ociProbeGuard);
//   - outpost-pN: `outpost bundle load --parallel N B.outpost` of a bundle
//     built from those same archives (`--no-outpost-bin`, so both load the
//     same bytes), including the signature check and the sha256 of every
//     byte, for each -parallel value given;
//   - outpost-vf-pN: the same with --verify-first (nothing imported until
//     the whole bundle has verified), for each -verify-first value.
//
// Before each timed load the input files are read once so both start from
// the page cache. It prints the median and min seconds and MB/s of each and
// the throughput ratio outpost / podman (target ≥ 0.9). It exits non-zero
// only when something fails to run. It must run as the user owning the
// rootless Podman storage. See bench/README.md.
package main

import (
	"archive/tar"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
)

type config struct {
	outpost  string
	dir      string
	images   int
	sizeMiB  int64
	rounds   int
	parallel []int
	vfirst   []int
	seed     uint64
	keep     bool
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-bundle:", err)
		os.Exit(1)
	}
}

func run() error {
	var c config
	var par, vf string
	flag.StringVar(&c.outpost, "outpost", "./outpost", "outpost binary under test")
	flag.StringVar(&c.dir, "dir", "bundle-work", "work directory (archives are kept between runs)")
	flag.IntVar(&c.images, "images", 4, "number of images")
	flag.Int64Var(&c.sizeMiB, "size", 640, "total image size in MiB")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per variant")
	flag.StringVar(&par, "parallel", "2,4", "outpost bundle load --parallel values to measure (comma-separated)")
	flag.StringVar(&vf, "verify-first", "4", "--parallel values to measure with --verify-first (comma-separated; empty for none)")
	flag.Uint64Var(&c.seed, "seed", 1, "content seed")
	flag.BoolVar(&c.keep, "keep", false, "leave the images loaded at the end")
	flag.Parse()
	var err error
	if c.parallel, err = numbers("-parallel", par); err != nil {
		return err
	}
	if c.vfirst, err = numbers("-verify-first", vf); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out, err := filepath.Abs(c.outpost)
	if err != nil {
		return err
	}
	c.outpost = out

	t0 := time.Now()
	imgs, err := generate(c.dir, c.images, c.sizeMiB<<20, c.seed)
	if err != nil {
		return fmt.Errorf("generating images: %w", err)
	}
	var total int64
	for _, im := range imgs {
		total += im.Bytes
	}
	fmt.Printf("images: %d docker-archives, %.1f MB in all (generated or reused in %s)\n", len(imgs), mb(total), time.Since(t0).Round(time.Millisecond))

	bundlePath, err := buildBundle(ctx, c, imgs)
	if err != nil {
		return err
	}
	st, err := os.Stat(bundlePath)
	if err != nil {
		return err
	}
	fmt.Printf("bundle: %s, %.1f MB (zstd)\n\n", bundlePath, mb(st.Size()))

	same, err := bundleArchives(bundlePath, filepath.Join(c.dir, "same"))
	if err != nil {
		return err
	}
	variants := []string{"podman", "podman-par", "podman-same"}
	for _, p := range c.parallel {
		variants = append(variants, fmt.Sprintf("outpost-p%d", p))
	}
	for _, p := range c.vfirst {
		variants = append(variants, fmt.Sprintf("outpost-vf-p%d", p))
	}
	times := map[string][]time.Duration{}
	for r := 0; r < c.rounds; r++ {
		// Rotate the order so no variant always runs first or last.
		order := append(variants[r%len(variants):], variants[:r%len(variants)]...)
		for _, v := range order {
			if err := clean(ctx, imgs); err != nil {
				return err
			}
			var d time.Duration
			switch {
			case v == "podman":
				d, err = podmanLoad(ctx, imgs, false)
			case v == "podman-par":
				d, err = podmanLoad(ctx, imgs, true)
			case v == "podman-same":
				d, err = podmanLoad(ctx, same, false)
			case strings.HasPrefix(v, "outpost-vf-p"):
				p, _ := strconv.Atoi(strings.TrimPrefix(v, "outpost-vf-p"))
				d, err = outpostLoad(ctx, c, bundlePath, p, true)
			default:
				p, _ := strconv.Atoi(strings.TrimPrefix(v, "outpost-p"))
				d, err = outpostLoad(ctx, c, bundlePath, p, false)
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, v, err)
			}
			if err := checkLoaded(ctx, imgs); err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, v, err)
			}
			fmt.Printf("round %d  %-12s %6.2f s  %6.1f MB/s\n", r+1, v, d.Seconds(), mb(total)/d.Seconds())
			times[v] = append(times[v], d)
		}
	}
	if !c.keep {
		if err := clean(ctx, imgs); err != nil {
			return err
		}
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tmedian s\tmin s\tmedian MB/s\t")
	for _, v := range variants {
		med, mn := stats(times[v])
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1f\t\n", v, med.Seconds(), mn.Seconds(), mb(total)/med.Seconds())
	}
	tw.Flush()
	fmt.Println()
	pm, pmin := stats(times["podman"])
	ppm, _ := stats(times["podman-par"])
	for _, v := range variants[3:] {
		om, omin := stats(times[v])
		fmt.Printf("throughput %s / podman: median %.2fx, best %.2fx, paired %.2fx (target >= 0.9); / podman-par: %.2fx\n",
			v, pm.Seconds()/om.Seconds(), pmin.Seconds()/omin.Seconds(), paired(times["podman"], times[v]), ppm.Seconds()/om.Seconds())
	}
	fmt.Println("(paired: the median over rounds of podman's time / the variant's time in the same round, which cancels the drift of a shared machine between rounds)")
	return nil
}

// paired is the median of base[i]/v[i].
func paired(base, v []time.Duration) float64 {
	var rs []float64
	for i := range base {
		if i < len(v) && v[i] > 0 {
			rs = append(rs, base[i].Seconds()/v[i].Seconds())
		}
	}
	if len(rs) == 0 {
		return 0
	}
	sort.Float64s(rs)
	return rs[len(rs)/2]
}

func mb(n int64) float64 { return float64(n) / 1e6 }

func stats(ds []time.Duration) (median, min time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0, 0
	}
	return s[len(s)/2], s[0]
}

// buildBundle builds (or reuses) the bundle of the generated archives.
func buildBundle(ctx context.Context, c config, imgs []genImage) (string, error) {
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return "", err
	}
	var compose strings.Builder
	compose.WriteString("name: benchbundle\nservices:\n")
	for i, im := range imgs {
		fmt.Fprintf(&compose, "  s%d:\n    image: %s\n", i, im.Ref)
	}
	cf := filepath.Join(dir, "compose.yml")
	if err := os.WriteFile(cf, []byte(compose.String()), 0o644); err != nil {
		return "", err
	}
	key := filepath.Join(dir, "bench")
	if _, err := os.Stat(key + ".key"); err != nil {
		if _, err := runCmd(ctx, c.outpost, "bundle", "keygen", "-o", key); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, "bench.outpost")
	args := []string{"bundle", "build", "-q", "-f", cf, "-o", out, "--sign-key", key + ".key", "--no-outpost-bin"}
	for _, im := range imgs {
		args = append(args, "--from", im.Archive)
	}
	t0 := time.Now()
	if _, err := runCmd(ctx, c.outpost, args...); err != nil {
		return "", err
	}
	fmt.Printf("bundle built in %s\n", time.Since(t0).Round(time.Millisecond))
	return out, nil
}

// clean removes the bench images so the next load starts from nothing.
func clean(ctx context.Context, imgs []genImage) error {
	for _, im := range imgs {
		out, err := exec.CommandContext(ctx, "podman", "rmi", "-f", im.Ref).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "image not known") && !strings.Contains(string(out), "no such image") {
			return fmt.Errorf("podman rmi %s: %v: %s", im.Ref, err, out)
		}
	}
	return nil
}

func checkLoaded(ctx context.Context, imgs []genImage) error {
	for _, im := range imgs {
		if out, err := exec.CommandContext(ctx, "podman", "image", "exists", im.Ref).CombinedOutput(); err != nil {
			return fmt.Errorf("%s not loaded: %v %s", im.Ref, err, out)
		}
	}
	return nil
}

// warm reads files once so every variant starts with them in the page
// cache.
func warm(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func podmanLoad(ctx context.Context, imgs []genImage, parallel bool) (time.Duration, error) {
	var paths []string
	for _, im := range imgs {
		paths = append(paths, im.Archive)
	}
	if err := warm(paths...); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if !parallel {
		for _, p := range paths {
			if _, err := runCmd(ctx, "podman", "load", "-q", "-i", p); err != nil {
				return 0, err
			}
		}
		return time.Since(t0), nil
	}
	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = runCmd(ctx, "podman", "load", "-q", "-i", p)
		}()
	}
	wg.Wait()
	return time.Since(t0), errors.Join(errs...)
}

func outpostLoad(ctx context.Context, c config, bundlePath string, parallel int, verifyFirst bool) (time.Duration, error) {
	if err := warm(bundlePath); err != nil {
		return 0, err
	}
	dir, _ := filepath.Abs(c.dir)
	args := []string{"bundle", "load", "-q", bundlePath,
		"--pubkey", filepath.Join(dir, "bench.pub"), "--parallel", strconv.Itoa(parallel),
		"--state-dir", filepath.Join(dir, "state"), "--runtime-dir", filepath.Join(dir, "run")}
	if verifyFirst {
		args = append(args, "--verify-first")
	}
	t0 := time.Now()
	_, err := runCmd(ctx, c.outpost, args...)
	return time.Since(t0), err
}

func numbers(flagName, list string) ([]int, error) {
	var out []int
	for _, p := range strings.Split(list, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", flagName, p)
		}
		out = append(out, n)
	}
	return out, nil
}

func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// bundleArchives writes the image archives a bundle carries into dir
// (once) by reading the bundle's zstd-compressed tar directly.
func bundleArchives(bundlePath, dir string) ([]genImage, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Open(bundlePath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out []genImage
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", bundlePath, err)
		}
		if !strings.HasPrefix(hdr.Name, "images/") {
			continue
		}
		p := filepath.Join(dir, filepath.Base(hdr.Name))
		w, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(w, tr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		out = append(out, genImage{Archive: p, Bytes: n})
	}
}
