package compose

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v4"
)

// compose-go merges every file into one model and keeps no record of where a
// key came from, so problems would name no file. sourceIndex keeps each
// file's raw YAML tree to answer "which file (and line) sets this key?".

// sourceFile is one Compose file as given to Load.
type sourceFile struct {
	display string       // name shown to users: as the caller gave it
	path    string       // absolute path (or the pseudo name for LoadBytes)
	content []byte       // bytes handed to compose-go
	docs    []*yaml.Node // document roots
}

// sourceIndex answers location queries over the files in merge order.
type sourceIndex struct {
	files []*sourceFile
}

func newSourceIndex(files []*sourceFile) (*sourceIndex, error) {
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(f.content))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("parsing %s: %w", f.display, err)
			}
			root := &doc
			if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
				root = root.Content[0]
			}
			f.docs = append(f.docs, root)
		}
	}
	return &sourceIndex{files: files}, nil
}

// fileOrder sorts problems by the merge order of their files; problems with
// no file come last.
func (s *sourceIndex) fileOrder(display string) int {
	for i, f := range s.files {
		if f.display == display {
			return i
		}
	}
	return len(s.files)
}

// locate finds the first of keys (dotted paths, "[]" for any list item, a
// number for a list index) set in the files. For a setting, the last file
// holding it wins, as its value does in the merge; a whole resource
// ("services.db", "volumes.data") is located where it is first declared.
// When no file holds a full key, the deepest partial match of the first key
// names the file, so a problem with "services.db.ports[].mode" written in
// short syntax still points at services.db.ports. The returned key is the
// one found, or keys[0].
func (s *sourceIndex) locate(keys []string) (file string, line int, key string) {
	keys = slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "" })
	if len(keys) == 0 {
		return "", 0, ""
	}
	for _, k := range keys {
		parts := splitKey(k)
		order := make([]int, len(s.files))
		for i := range order {
			order[i] = len(s.files) - 1 - i
			if len(parts) <= 2 {
				order[i] = i
			}
		}
		for _, i := range order {
			if depth, ln := s.files[i].lookup(parts); depth == len(parts) {
				return s.files[i].display, ln, displayKey(k)
			}
		}
	}
	parts := splitKey(keys[0])
	bestDepth, bestLine, bestFile := 0, 0, ""
	for i := len(s.files) - 1; i >= 0; i-- {
		if depth, ln := s.files[i].lookup(parts); depth > bestDepth {
			bestDepth, bestLine, bestFile = depth, ln, s.files[i].display
		}
	}
	// A match on "services" alone says nothing about where the key is.
	if bestDepth < 2 && len(parts) > 1 {
		return "", 0, displayKey(keys[0])
	}
	return bestFile, bestLine, displayKey(keys[0])
}

// has reports whether any file sets key.
func (s *sourceIndex) has(key string) bool {
	parts := splitKey(key)
	for _, f := range s.files {
		if d, _ := f.lookup(parts); d == len(parts) {
			return true
		}
	}
	return false
}

// scalar returns the literal scalar value of key in the last file setting it.
func (s *sourceIndex) scalar(key string) (string, bool) {
	parts := splitKey(key)
	for i := len(s.files) - 1; i >= 0; i-- {
		for _, doc := range s.files[i].docs {
			if n := find(doc, parts); n != nil && n.Kind == yaml.ScalarNode {
				return n.Value, true
			}
		}
	}
	return "", false
}

func splitKey(k string) []string {
	k = strings.ReplaceAll(k, "[]", ".[]")
	var parts []string
	for _, p := range strings.Split(k, ".") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return parts
}

// displayKey writes list items as "ports[]" rather than "ports.[]".
func displayKey(k string) string { return strings.ReplaceAll(k, ".[]", "[]") }

// lookup returns how many leading parts were matched in the deepest document
// and the line of the last matched node.
func (f *sourceFile) lookup(parts []string) (depth, line int) {
	for _, doc := range f.docs {
		if d, l := match(doc, parts); d > depth {
			depth, line = d, l
		}
	}
	return depth, line
}

// match walks parts down n; it returns the number of parts matched and the
// line of the deepest key (for mappings the key's line, which is what a user
// looks for).
func match(n *yaml.Node, parts []string) (int, int) {
	n = deref(n)
	if n == nil || len(parts) == 0 {
		return 0, 0
	}
	switch n.Kind {
	case yaml.MappingNode:
		for _, m := range mappingEntries(n) {
			if m.key.Value != parts[0] {
				continue
			}
			d, l := match(m.value, parts[1:])
			if d == 0 {
				return 1, m.key.Line
			}
			return 1 + d, l
		}
	case yaml.SequenceNode:
		if parts[0] == "[]" {
			bestD, bestL := 0, 0
			for _, item := range n.Content {
				d, l := match(item, parts[1:])
				if d+1 > bestD {
					bestD, bestL = d+1, l
					if d == 0 {
						bestL = item.Line
					}
				}
				if bestD == len(parts) {
					break
				}
			}
			return bestD, bestL
		}
		if i, err := strconv.Atoi(parts[0]); err == nil && i >= 0 && i < len(n.Content) {
			item := n.Content[i]
			d, l := match(item, parts[1:])
			if d == 0 {
				return 1, item.Line
			}
			return 1 + d, l
		}
		// Short syntax: "depends_on: [db]" holds what the long syntax
		// writes as the key depends_on.db.
		for _, item := range n.Content {
			if item = deref(item); item.Kind == yaml.ScalarNode && item.Value == parts[0] {
				return 1, item.Line
			}
		}
	}
	return 0, 0
}

// find returns the node at parts, or nil.
func find(n *yaml.Node, parts []string) *yaml.Node {
	n = deref(n)
	if n == nil {
		return nil
	}
	if len(parts) == 0 {
		return n
	}
	switch n.Kind {
	case yaml.MappingNode:
		for _, m := range mappingEntries(n) {
			if m.key.Value == parts[0] {
				return find(m.value, parts[1:])
			}
		}
	case yaml.SequenceNode:
		if i, err := strconv.Atoi(parts[0]); err == nil && i >= 0 && i < len(n.Content) {
			return find(n.Content[i], parts[1:])
		}
	}
	return nil
}

type entry struct{ key, value *yaml.Node }

// mappingEntries lists a mapping's entries, own keys first, then those
// brought in by YAML merge keys ("<<: *anchor"), as the YAML decoder would.
func mappingEntries(n *yaml.Node) []entry {
	var own, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" || k.Value == "<<" && k.Tag == "" {
			for _, src := range mergeSources(v) {
				merged = append(merged, mappingEntries(src)...)
			}
			continue
		}
		own = append(own, entry{k, v})
	}
	return append(own, merged...)
}

func mergeSources(v *yaml.Node) []*yaml.Node {
	v = deref(v)
	if v == nil {
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, item := range v.Content {
			if m := deref(item); m != nil && m.Kind == yaml.MappingNode {
				out = append(out, m)
			}
		}
		return out
	}
	return nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// stripVersion comments out an obsolete top-level `version:` line. compose-go
// would otherwise log its own warning through a global logger; Outpost
// reports it as a Warning instead. Only the simple one-line form is touched.
func stripVersion(f *sourceFile) (line int, ok bool) {
	for _, doc := range f.docs {
		if doc.Kind != yaml.MappingNode {
			continue
		}
		for i := 0; i+1 < len(doc.Content); i += 2 {
			k, v := doc.Content[i], doc.Content[i+1]
			if k.Value != "version" || k.Column != 1 || v.Kind != yaml.ScalarNode || v.Line != k.Line {
				continue
			}
			lines := bytes.SplitAfter(f.content, []byte("\n"))
			if k.Line-1 >= len(lines) {
				return 0, false
			}
			out := make([]byte, 0, len(f.content)+1)
			for j, l := range lines {
				if j == k.Line-1 {
					out = append(out, '#')
				}
				out = append(out, l...)
			}
			f.content = out
			return k.Line, true
		}
	}
	return 0, false
}

// varRefs finds the keys whose values contain one of needles (forms of a
// variable reference such as "${NAME:?"), for reporting a variable problem
// at the place that uses it. A "$NAME" needle only matches when NAME is not
// followed by another name character.
func (s *sourceIndex) varRefs(name string, needles ...string) []Problem {
	var out []Problem
	for _, f := range s.files {
		for _, doc := range f.docs {
			walkScalars(doc, nil, func(path []string, n *yaml.Node) {
				for _, nd := range needles {
					if containsRef(n.Value, nd) {
						out = append(out, Problem{File: f.display, Line: n.Line, Key: strings.Join(path, ".")})
						return
					}
				}
			})
		}
	}
	return out
}

func containsRef(s, needle string) bool {
	for i := strings.Index(s, needle); i >= 0; {
		end := i + len(needle)
		if strings.HasSuffix(needle, "}") || strings.HasSuffix(needle, "?") || end == len(s) || !isNameByte(s[end]) {
			if i == 0 || s[i-1] != '$' { // $$NAME is an escaped dollar
				return true
			}
		}
		next := strings.Index(s[end:], needle)
		if next < 0 {
			return false
		}
		i = end + next
	}
	return false
}

func isNameByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}

func walkScalars(n *yaml.Node, path []string, fn func([]string, *yaml.Node)) {
	n = deref(n)
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.ScalarNode:
		fn(path, n)
	case yaml.MappingNode:
		for _, m := range mappingEntries(n) {
			walkScalars(m.value, append(append([]string{}, path...), m.key.Value), fn)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			walkScalars(item, append(append([]string{}, path...), strconv.Itoa(i)), fn)
		}
	}
}
