package bundle

import (
	"bufio"
	"fmt"
	"os"
)

// SignatureStatus says what Inspect knows of a bundle's signature.
type SignatureStatus string

// Signature states.
const (
	// SignatureValid: made by a trusted key over this manifest.
	SignatureValid SignatureStatus = "valid"
	// SignatureNotChecked: no trusted key was given; KeyID is only what
	// the signature claims.
	SignatureNotChecked SignatureStatus = "not checked"
)

// InspectOptions configure Inspect.
type InspectOptions struct {
	// Trust, when it holds keys, makes Inspect check the signature and
	// fail when it does not verify.
	Trust *Trust
}

// InspectResult is what a bundle says about itself.
type InspectResult struct {
	// Path is the bundle file and FileSize its size.
	Path     string `json:"path"`
	FileSize int64  `json:"file_size"`
	// Manifest is the bundle's manifest.
	Manifest *Manifest `json:"manifest"`
	// KeyID names the signing key; Signature says whether it was checked.
	KeyID     string          `json:"key_id"`
	Signature SignatureStatus `json:"signature"`
}

// Inspect reads only the manifest and signature at the start of the file
// (milliseconds, whatever the bundle's size). It does not check entry
// contents: use Verify for that.
func Inspect(path string, opts InspectOptions) (*InspectResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	check := opts.Trust.Len() > 0
	br, err := NewReader(bufio.NewReader(f), ReaderOptions{Trust: opts.Trust, SkipSignature: !check})
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	defer br.Close()
	res := &InspectResult{Path: path, FileSize: st.Size(), Manifest: br.Manifest(), KeyID: br.KeyID(), Signature: SignatureNotChecked}
	if check {
		res.Signature = SignatureValid
	}
	return res, nil
}
