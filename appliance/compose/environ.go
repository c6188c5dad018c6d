package compose

import (
	"fmt"
	"path/filepath"
)

// Environment returns the interpolation variables a Load with opts uses:
// opts.Environ over the env files (opts.EnvFiles, else the .env beside the
// first file). Other readers of the definition need it to resolve
// placeholders of their own, e.g. the {$VAR} placeholders of a proxy
// Caddyfile.
func Environment(opts Options) (map[string]string, error) {
	baseDir := ""
	if len(opts.Files) > 0 {
		abs, err := filepath.Abs(opts.Files[0])
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", opts.Files[0], err)
		}
		baseDir = filepath.Dir(abs)
	}
	workingDir := opts.WorkingDir
	if workingDir == "" {
		workingDir = baseDir
	}
	if workingDir == "" {
		workingDir = "."
	}
	workingDir, err := filepath.Abs(workingDir)
	if err != nil {
		return nil, fmt.Errorf("resolving working directory: %w", err)
	}
	return environment(opts, baseDir, workingDir)
}
