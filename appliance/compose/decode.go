package compose

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// decodeStrict decodes a YAML-derived value (maps, lists, strings, numbers,
// bools, nil: what compose-go hands back for an extension) into out, a
// pointer to a struct whose fields carry `json` tags. Unlike encoding/json
// with DisallowUnknownFields it does not stop at the first problem: every
// unknown key and every value of the wrong type is passed to bad with its
// full key path, and decoding goes on. Keys starting with "x-" are ignored
// at every level so vendors can keep anchors and notes inside x-outpost.
//
// Scalars are coerced the way YAML authors expect after interpolation
// (which turns every substituted value into a string): "true" decodes into a
// bool, "30" into an int. time.Duration accepts Go duration strings ("90s",
// "1m30s") or a number of seconds; shellCommand accepts a list or a string
// split like a shell would (as Compose does for command:).
func decodeStrict(in any, out any, key string, bad func(key, msg string)) {
	d := decoder{bad: bad}
	d.value(in, reflect.ValueOf(out).Elem(), key)
}

// shellCommand is a command given as a list or as one string to split.
type shellCommand []string

var (
	durationType = reflect.TypeOf(time.Duration(0))
	commandType  = reflect.TypeOf(shellCommand(nil))
)

type decoder struct {
	bad func(key, msg string)
}

func (d decoder) value(in any, out reflect.Value, key string) {
	if in == nil {
		return // an empty key keeps the zero value, as in YAML's "key:"
	}
	switch out.Type() {
	case durationType:
		d.duration(in, out, key)
		return
	case commandType:
		var c types.ShellCommand
		if err := c.DecodeMapstructure(in); err != nil {
			d.bad(key, fmt.Sprintf("expected a command (a list of strings or one string), got %s", describe(in)))
			return
		}
		out.Set(reflect.ValueOf(shellCommand(c)))
		return
	}
	switch out.Kind() {
	case reflect.Pointer:
		v := reflect.New(out.Type().Elem())
		d.value(in, v.Elem(), key)
		out.Set(v)
	case reflect.Struct:
		d.structure(in, out, key)
	case reflect.Map:
		m, ok := in.(map[string]any)
		if !ok {
			d.bad(key, fmt.Sprintf("expected a mapping, got %s", describe(in)))
			return
		}
		res := reflect.MakeMapWithSize(out.Type(), len(m))
		for _, k := range sortedKeys(m) {
			if strings.HasPrefix(k, "x-") {
				continue
			}
			ev := reflect.New(out.Type().Elem()).Elem()
			d.value(m[k], ev, key+"."+k)
			res.SetMapIndex(reflect.ValueOf(k), ev)
		}
		out.Set(res)
	case reflect.Slice:
		list, ok := in.([]any)
		if !ok {
			// A single scalar where a list of scalars is expected is
			// accepted as a one-item list, like Compose's string-or-list.
			if _, isMap := in.(map[string]any); isMap || out.Type().Elem().Kind() == reflect.Struct {
				d.bad(key, fmt.Sprintf("expected a list, got %s", describe(in)))
				return
			}
			list = []any{in}
		}
		res := reflect.MakeSlice(out.Type(), len(list), len(list))
		for i, item := range list {
			d.value(item, res.Index(i), key+"."+strconv.Itoa(i))
		}
		out.Set(res)
	case reflect.String:
		switch v := in.(type) {
		case string:
			out.SetString(v)
		case bool, int, int64, uint64, float64:
			out.SetString(fmt.Sprint(v))
		default:
			d.bad(key, fmt.Sprintf("expected a string, got %s", describe(in)))
		}
	case reflect.Bool:
		switch v := in.(type) {
		case bool:
			out.SetBool(v)
		case string:
			b, err := strconv.ParseBool(v)
			if err != nil {
				d.bad(key, fmt.Sprintf("expected true or false, got %q", v))
				return
			}
			out.SetBool(b)
		default:
			d.bad(key, fmt.Sprintf("expected true or false, got %s", describe(in)))
		}
	case reflect.Int, reflect.Int64:
		n, ok := toInt(in)
		if !ok {
			d.bad(key, fmt.Sprintf("expected an integer, got %s", describe(in)))
			return
		}
		out.SetInt(n)
	default:
		// Only reachable by adding a field of an unsupported type.
		panic(fmt.Sprintf("decodeStrict: unsupported field type %s at %s", out.Type(), key))
	}
}

func (d decoder) structure(in any, out reflect.Value, key string) {
	m, ok := in.(map[string]any)
	if !ok {
		d.bad(key, fmt.Sprintf("expected a mapping, got %s", describe(in)))
		return
	}
	fields := map[string]int{}
	var names []string
	t := out.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	for _, k := range sortedKeys(m) {
		if strings.HasPrefix(k, "x-") {
			continue
		}
		i, ok := fields[k]
		if !ok {
			msg := fmt.Sprintf("unknown field %q", k)
			if s := suggest(k, names); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else {
				sort.Strings(names)
				msg += "; known fields: " + strings.Join(names, ", ")
			}
			d.bad(key+"."+k, msg)
			continue
		}
		d.value(m[k], out.Field(i), key+"."+k)
	}
}

func (d decoder) duration(in any, out reflect.Value, key string) {
	switch v := in.(type) {
	case string:
		dur, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			// A bare number in a string (from interpolation) means seconds.
			if n, nerr := strconv.ParseInt(strings.TrimSpace(v), 10, 64); nerr == nil {
				dur, err = time.Duration(n)*time.Second, nil
			}
		}
		if err != nil {
			d.bad(key, fmt.Sprintf("%q is not a duration; write e.g. 90s, 5m or 1h30m", v))
			return
		}
		out.SetInt(int64(dur))
	default:
		n, ok := toInt(in)
		if !ok {
			d.bad(key, fmt.Sprintf("expected a duration such as 90s, got %s", describe(in)))
			return
		}
		out.SetInt(int64(time.Duration(n) * time.Second))
	}
}

func toInt(in any) (int64, bool) {
	switch v := in.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case float64:
		if v != math.Trunc(v) || math.Abs(v) > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

func describe(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("the string %q", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	default:
		return fmt.Sprintf("%v", x)
	}
}

// suggest returns the candidate closest to s when it is close enough to be
// a likely typo.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := levenshtein(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
