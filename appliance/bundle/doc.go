// Package bundle owns Outpost's air-gap bundle: one signed file carrying an
// appliance's Compose files, env templates, images, the outpost binary and
// install.sh. It builds bundles (Build), checks them (Verify, Inspect),
// loads their images into Podman (Load) and extracts their files
// (Extract), each in one streaming read of the file, and makes signing
// keys.
//
// Format (docs/bundles.md has the full specification): a zstd stream of a
// tar whose first member is the manifest (outpost-bundle.json: every
// entry's name, kind, size and sha256, and each image's ID, names, layers
// and labels), the second the ed25519 signature over the manifest's exact
// bytes (outpost-bundle.sig), then the entries in the manifest's order:
// app/ (Compose and env files), bin/ (outpost, install.sh) and images/
// (one docker-archive with uncompressed layers per image, named by image
// ID). Because the signed manifest comes first, a reader knows what every
// following byte must hash to before reading it, and refuses anything
// unlisted, out of order, unsafe (a path leaving its directory, a link, a
// device) or short, naming the entry.
//
// The package changes nothing on the host until the whole bundle has
// verified: images stream into Podman while being hashed, but their last
// bytes are held back until the end (see Load). It must not import the
// Podman bindings: it talks to the engine through the small interfaces
// ImageEngine and ImageSaver.
package bundle
