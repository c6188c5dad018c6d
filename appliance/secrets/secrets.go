// Package secrets generates the values an appliance declares in
// x-outpost.secrets, keeps them in 0600 files, and injects them as
// environment variables into the services that list them.
//
// A value is generated once, the first time it is needed (at `outpost
// install`, or on the first start of an appliance that was never
// installed), and never again: reinstalls and upgrades read the file that
// exists. Values never appear in logs or errors. The package imports the
// standard library and model only.
package secrets

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/outpostdev/outpost/appliance/model"
)

// Dir returns where an appliance's secret files live below a state
// directory: <stateDir>/secrets/<appliance>.
func Dir(stateDir, appliance string) string {
	return filepath.Join(stateDir, "secrets", appliance)
}

// Owner is the user and group that should own generated files; nil keeps
// the creating process's (root uses it to hand files to a service user).
type Owner struct {
	UID, GID int
}

// Result says what Ensure did.
type Result struct {
	// Generated names the secrets created now, in declaration order.
	Generated []string
	// Kept names the secrets whose files already existed.
	Kept []string
}

// passwordAlphabet avoids characters that need quoting in shells, URLs and
// connection strings.
const passwordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// Ensure makes sure every secret app declares has a file in dir, generating
// the missing ones (files 0600, dir 0700, owned by owner when given). An
// existing file is never rewritten, whatever its content.
func Ensure(dir string, app *model.Appliance, owner *Owner) (Result, error) {
	var res Result
	if len(app.Secrets) == 0 {
		return res, nil
	}
	if err := mkdirOwned(dir, owner); err != nil {
		return res, err
	}
	for _, s := range app.Secrets {
		path := filepath.Join(dir, s.Name)
		if _, err := os.Lstat(path); err == nil {
			res.Kept = append(res.Kept, s.Name)
			continue
		} else if !errors.Is(err, os.ErrNotExist) {
			return res, fmt.Errorf("checking secret %s: %w", s.Name, err)
		}
		value, err := Generate(s, rand.Reader)
		if err != nil {
			return res, fmt.Errorf("generating secret %s: %w", s.Name, err)
		}
		if err := writeNew(path, []byte(value), owner); err != nil {
			return res, fmt.Errorf("storing secret %s: %w", s.Name, err)
		}
		res.Generated = append(res.Generated, s.Name)
	}
	return res, nil
}

// Load reads the value of every secret app declares from dir. A missing
// file is an error naming the secret and how to create it.
func Load(dir string, app *model.Appliance) (map[string]string, error) {
	values := make(map[string]string, len(app.Secrets))
	for _, s := range app.Secrets {
		data, err := os.ReadFile(filepath.Join(dir, s.Name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("secret %s has no value in %s; run `outpost install` (or start the appliance once) to generate it", s.Name, dir)
			}
			return nil, fmt.Errorf("reading secret %s: %w", s.Name, err)
		}
		values[s.Name] = strings.TrimRight(string(data), "\n")
	}
	return values, nil
}

// Inject returns a copy of app in which every service that lists a secret
// has its value in its environment (under the secret's Env name). app is
// not modified; services without secrets are shared with it.
func Inject(app *model.Appliance, values map[string]string) (*model.Appliance, error) {
	return rewrite(app, func(svc string, s *model.Secret) (string, error) {
		v, ok := values[s.Name]
		if !ok {
			return "", fmt.Errorf("service %s needs secret %s, which has no value", svc, s.Name)
		}
		return v, nil
	})
}

// Marker is what stands in for a secret's value wherever a definition is
// stored (the revision in the state database, a snapshot's definition):
// only the secret's name, never its value.
func Marker(name string) string {
	return "outpost-secret:" + name
}

// Redact returns a copy of app in which the environment variable of every
// secret a service lists holds Marker instead of the value, as Inject would
// place it. app is not modified; services without secrets are shared.
// Inject on the result puts the values back.
func Redact(app *model.Appliance) *model.Appliance {
	out, _ := rewrite(app, func(_ string, s *model.Secret) (string, error) { return Marker(s.Name), nil })
	if out == nil {
		return app // a service lists an undeclared secret; Validate reports it
	}
	return out
}

// rewrite returns a copy of app in which each service's environment holds
// value(service, secret) under the Env name of every secret it lists.
func rewrite(app *model.Appliance, value func(svc string, s *model.Secret) (string, error)) (*model.Appliance, error) {
	if len(app.Secrets) == 0 {
		return app, nil
	}
	byName := make(map[string]*model.Secret, len(app.Secrets))
	for _, s := range app.Secrets {
		byName[s.Name] = s
	}
	out := *app
	out.Services = make(map[string]*model.Service, len(app.Services))
	for name, svc := range app.Services {
		if len(svc.Secrets) == 0 {
			out.Services[name] = svc
			continue
		}
		cp := *svc
		cp.Environment = maps.Clone(svc.Environment)
		if cp.Environment == nil {
			cp.Environment = map[string]string{}
		}
		for _, sn := range svc.Secrets {
			s, ok := byName[sn]
			if !ok {
				return nil, fmt.Errorf("service %s lists secret %s, which x-outpost.secrets does not declare", name, sn)
			}
			v, err := value(name, s)
			if err != nil {
				return nil, err
			}
			cp.Environment[EnvName(s)] = v
		}
		out.Services[name] = &cp
	}
	return &out, nil
}

// Apply is Ensure, Load and Inject in one: what a start does.
func Apply(dir string, app *model.Appliance) (*model.Appliance, error) {
	if len(app.Secrets) == 0 {
		return app, nil
	}
	if _, err := Ensure(dir, app, nil); err != nil {
		return nil, err
	}
	values, err := Load(dir, app)
	if err != nil {
		return nil, err
	}
	return Inject(app, values)
}

var nonAlnum = regexp.MustCompile(`[^A-Za-z0-9]`)

// EnvName is the variable a secret is injected as: its Env, else its name
// upper-cased with non-alphanumerics as "_" (db-password → DB_PASSWORD).
func EnvName(s *model.Secret) string {
	if s.Env != "" {
		return s.Env
	}
	return strings.ToUpper(nonAlnum.ReplaceAllString(s.Name, "_"))
}

// Generate makes a new value for s from the random source r: Length random
// bytes as hex or base64 (standard, padded), or a password of Length
// characters from an alphabet without look-alikes or shell metacharacters.
func Generate(s *model.Secret, r io.Reader) (string, error) {
	n := s.Length
	if n <= 0 {
		n = 32
	}
	switch s.Generate {
	case "", "hex", "base64":
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", fmt.Errorf("reading random bytes: %w", err)
		}
		if s.Generate == "base64" {
			return base64.StdEncoding.EncodeToString(b), nil
		}
		return hex.EncodeToString(b), nil
	case "password":
		var sb strings.Builder
		max := big.NewInt(int64(len(passwordAlphabet)))
		for range n {
			i, err := rand.Int(r, max)
			if err != nil {
				return "", fmt.Errorf("reading random bytes: %w", err)
			}
			sb.WriteByte(passwordAlphabet[i.Int64()])
		}
		return sb.String(), nil
	default:
		return "", fmt.Errorf("unknown generator %q; use hex, base64 or password", s.Generate)
	}
}

func mkdirOwned(dir string, owner *Owner) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating secrets directory %s: %w", dir, err)
	}
	// The parent (<state>/secrets) is created by the same MkdirAll; tighten
	// and hand over both levels.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("restricting secrets directory %s: %w", d, err)
		}
		if owner != nil {
			if err := os.Lchown(d, owner.UID, owner.GID); err != nil {
				return fmt.Errorf("handing secrets directory %s to uid %d: %w", d, owner.UID, err)
			}
		}
	}
	return nil
}

// writeNew writes a new file atomically (temp file + link), failing if the
// file appeared meanwhile, so a concurrent writer's value is never
// replaced.
func writeNew(path string, data []byte, owner *Owner) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if owner != nil {
		if err := tmp.Chown(owner.UID, owner.GID); err != nil {
			tmp.Close()
			return err
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link fails if path exists: the first value written wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	return nil
}
