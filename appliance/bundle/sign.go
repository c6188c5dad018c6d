package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Signature is the content of the SignatureName entry.
type Signature struct {
	// Algorithm is always "ed25519".
	Algorithm string `json:"algorithm"`
	// KeyID names the signing key (see KeyID).
	KeyID string `json:"key_id"`
	// Value is the base64 ed25519 signature over the manifest bytes.
	Value string `json:"signature"`
}

// KeyID returns a short, stable name for a public key: "ed25519:" and the
// first 16 hex digits of the sha256 of the raw key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "ed25519:" + hex.EncodeToString(sum[:8])
}

// Sign signs manifest bytes with key.
func Sign(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("signing bundle manifest: not an ed25519 private key")
	}
	sig := Signature{
		Algorithm: "ed25519",
		KeyID:     KeyID(key.Public().(ed25519.PublicKey)),
		Value:     base64.StdEncoding.EncodeToString(ed25519.Sign(key, manifest)),
	}
	b, err := json.Marshal(sig)
	if err != nil {
		return nil, fmt.Errorf("encoding bundle signature: %w", err)
	}
	return append(b, '\n'), nil
}

// Trust is the set of public keys a bundle may be signed by.
type Trust struct {
	keys []ed25519.PublicKey
}

// NewTrust trusts keys.
func NewTrust(keys ...ed25519.PublicKey) *Trust {
	return &Trust{keys: keys}
}

// Len is the number of trusted keys.
func (t *Trust) Len() int {
	if t == nil {
		return 0
	}
	return len(t.keys)
}

// IDs lists the trusted keys' IDs, sorted.
func (t *Trust) IDs() []string {
	if t == nil {
		return nil
	}
	ids := make([]string, len(t.keys))
	for i, k := range t.keys {
		ids[i] = KeyID(k)
	}
	sort.Strings(ids)
	return ids
}

// Key returns the trusted key whose ID is id.
func (t *Trust) Key(id string) (ed25519.PublicKey, bool) {
	if t == nil {
		return nil, false
	}
	for _, k := range t.keys {
		if KeyID(k) == id {
			return k, true
		}
	}
	return nil, false
}

// Verify checks that sigData is a valid signature of manifest by a trusted
// key and returns that key's ID. The message says which key signed and
// which keys are trusted, so a wrong --pubkey is easy to tell from a
// tampered bundle.
func (t *Trust) Verify(manifest, sigData []byte) (string, error) {
	sig, raw, err := parseSignature(sigData)
	if err != nil {
		return "", err
	}
	if t.Len() == 0 {
		return "", fmt.Errorf("%w: no trusted public key to check the signature (by %s) with; pass --pubkey FILE", ErrSignature, sig.KeyID)
	}
	for _, k := range t.keys {
		if KeyID(k) != sig.KeyID {
			continue
		}
		if !ed25519.Verify(k, manifest, raw) {
			return "", fmt.Errorf("%w: the manifest does not match its signature by trusted key %s: the bundle was modified after signing", ErrSignature, sig.KeyID)
		}
		return sig.KeyID, nil
	}
	// The key ID is only a hint: a signature under an unknown ID is
	// still tried against every trusted key, and refused unless one
	// verifies it.
	for _, k := range t.keys {
		if ed25519.Verify(k, manifest, raw) {
			return KeyID(k), nil
		}
	}
	return "", fmt.Errorf("%w: signed by key %s, which is not trusted (trusted: %s); get the vendor's public key or check --pubkey", ErrSignature, sig.KeyID, strings.Join(t.IDs(), ", "))
}

// parseSignature decodes a SignatureName entry.
func parseSignature(data []byte) (Signature, []byte, error) {
	var sig Signature
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sig); err != nil {
		return sig, nil, fmt.Errorf("%w: decoding %s: %v", ErrSignature, SignatureName, err)
	}
	if sig.Algorithm != "ed25519" {
		return sig, nil, fmt.Errorf("%w: algorithm %q, want ed25519", ErrSignature, sig.Algorithm)
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Value)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return sig, nil, fmt.Errorf("%w: malformed ed25519 signature in %s", ErrSignature, SignatureName)
	}
	return sig, raw, nil
}

// GenerateKey makes a new signing key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating ed25519 key: %w", err)
	}
	return pub, priv, nil
}

// EncodePrivateKey encodes key as PEM "PRIVATE KEY" (PKCS #8), the form
// `openssl genpkey -algorithm ed25519` writes.
func EncodePrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodePublicKey encodes key as PEM "PUBLIC KEY" (PKIX), the form
// `openssl pkey -pubout` writes.
func EncodePublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes a PEM PKCS #8 ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("not a PEM \"PRIVATE KEY\" (make one with `outpost bundle keygen`)")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, not ed25519", k)
	}
	return ek, nil
}

// ParsePublicKey decodes a PEM PKIX ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM \"PUBLIC KEY\" (the .pub file `outpost bundle keygen` writes)")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key is %T, not ed25519", k)
	}
	return ek, nil
}

// ReadPrivateKey reads a private key file.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// ReadTrust reads public key files; a directory contributes every *.pub
// file in it.
func ReadTrust(paths ...string) (*Trust, error) {
	t := &Trust{}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("reading public key: %w", err)
		}
		files := []string{p}
		if st.IsDir() {
			files, err = filepath.Glob(filepath.Join(p, "*.pub"))
			if err != nil {
				return nil, err
			}
			sort.Strings(files)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("reading public key: %w", err)
			}
			k, err := ParsePublicKey(data)
			if err != nil {
				return nil, fmt.Errorf("public key %s: %w", f, err)
			}
			t.keys = append(t.keys, k)
		}
	}
	return t, nil
}

// WriteKeyPair writes prefix.key (mode 0600) and prefix.pub (0644),
// refusing to overwrite either, and returns the key ID.
func WriteKeyPair(prefix string) (string, error) {
	pub, priv, err := GenerateKey()
	if err != nil {
		return "", err
	}
	privPEM, err := EncodePrivateKey(priv)
	if err != nil {
		return "", err
	}
	pubPEM, err := EncodePublicKey(pub)
	if err != nil {
		return "", err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{prefix + ".key", privPEM, 0o600}, {prefix + ".pub", pubPEM, 0o644}} {
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			return "", err
		}
	}
	return KeyID(pub), nil
}

// writeNew creates path with data, failing if it exists.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; choose another name or remove it", path)
		}
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
