package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The file as written. Durations are strings so that a bad one is reported with its
// key path; every struct is checked for unknown keys.
type rawFile struct {
	State   rawState    `yaml:"state"`
	NATS    rawNATS     `yaml:"nats"`
	HTTP    rawHTTP     `yaml:"http"`
	Admin   rawAdmin    `yaml:"admin"`
	Sources []rawSource `yaml:"sources"`
	Cluster rawCluster  `yaml:"cluster"`
	// Webhooks is the webhook listener (webhooks.go).
	Webhooks rawWebhooks `yaml:"webhooks"`
}

type rawState struct {
	Backend string    `yaml:"backend"`
	Path    string    `yaml:"path"`
	NATSKV  rawNATSKV `yaml:"nats_kv"`
}

type rawNATS struct {
	URL      string `yaml:"url"`
	Embedded struct {
		Listen       string `yaml:"listen"`
		StoreDir     string `yaml:"store_dir"`
		SyncInterval string `yaml:"sync_interval"`
	} `yaml:"embedded"`
	Stream              string `yaml:"stream"`
	SubjectPrefix       string `yaml:"subject_prefix"`
	DuplicateWindow     string `yaml:"duplicate_window"`
	RetainAcked         string `yaml:"retain_acked"`
	RetainAckedMaxBytes string `yaml:"retain_acked_max_bytes"` // bytes, or with a unit; "" is the default, 0 no limit
	StreamStorage       string `yaml:"stream_storage"`
	StreamMaxAge        string `yaml:"stream_max_age"`
	StreamMaxBytes      string `yaml:"stream_max_bytes"` // bytes, or with a unit: 10GiB
	Replicas            int    `yaml:"replicas"`
	MaxOutbox           int    `yaml:"max_outbox"`
	OutboxPace          *int   `yaml:"outbox_pace"` // nil: the default; 0 turns pacing off
	CredsFile           string `yaml:"creds_file"`
	Token               string `yaml:"token"`
	TokenFile           string `yaml:"token_file"`
	User                string `yaml:"user"`
	Password            string `yaml:"password"`
	PasswordFile        string `yaml:"password_file"`
	NKeyFile            string `yaml:"nkey_file"`
	TLS                 struct {
		CA   string `yaml:"ca"`
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
}

type rawHTTP struct {
	Listen *string `yaml:"listen"` // nil: default; "": disabled
}

type rawAdmin struct {
	Listen    *string `yaml:"listen"` // nil: default; "": disabled
	Token     string  `yaml:"token"`
	TokenFile string  `yaml:"token_file"`
}

// rawSource is one source as written: the keys every source has, and in Own the
// provider's own keys (provider.Provider.Keys), which Parse checks and decodes once
// it knows the provider.
type rawSource struct {
	Name               string            `yaml:"name"`
	Provider           string            `yaml:"provider"`
	BaseURL            string            `yaml:"base_url"`
	CAFile             string            `yaml:"ca_file"`
	Interval           string            `yaml:"interval"`
	PageSize           int               `yaml:"page_size"`
	DiscoveryOverlap   string            `yaml:"discovery_overlap"`
	Lookback           string            `yaml:"lookback"`
	OpenRefresh        string            `yaml:"open_refresh"`
	OpenRefreshByState map[string]string `yaml:"open_refresh_by_state"`
	OpenRefreshMax     string            `yaml:"open_refresh_max"`
	RateLimit          float64           `yaml:"rate_limit"`
	Baseline           string            `yaml:"baseline"`
	OpenMaxAge         string            `yaml:"open_max_age"`
	SettleWindow       string            `yaml:"settle_window"`
	RequestTimeout     string            `yaml:"request_timeout"`
	MaxPages           int               `yaml:"max_pages"`
	TerminalStatuses   []string          `yaml:"terminal_statuses"`
	// Own holds every other key of the source, each a single value (the walker
	// checks that, and expands its ${VAR}s).
	Own map[string]yaml.Node `yaml:",inline"`
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// decodeStrict parses data into out: ${VAR} references in scalar values are expanded
// ("$$" is a literal "$"), keys out does not declare are errors, and every error names
// the key path. A struct with a ",inline" map field declares the keys accept accepts
// besides its own fields: accept is given the mapping and the key.
//
// A ${VAR} that is not set does not stop the decoding: it expands to "" and its key
// path is returned in unset, with an error naming the variable, so that the caller can
// report it beside the problems it finds in the rest of the file. err holds every
// other problem of the file, and the unset variables with them; out is complete only
// when err is nil.
func decodeStrict(data []byte, out any, env func(string) (string, bool), accept func(m *yaml.Node, key string) bool) (unset unsetVars, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return unsetVars{}, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(doc.Content) == 0 {
		return unsetVars{}, errors.New("the file is empty")
	}
	w := &walker{env: env, accept: accept, lines: map[int]string{}, expanded: map[*yaml.Node]bool{}}
	w.walk(doc.Content[0], reflect.TypeOf(out).Elem(), "")
	if len(w.errs) > len(w.unset.errs) {
		return unsetVars{}, capErrors(w.errs)
	}
	if err := doc.Content[0].Decode(out); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return unsetVars{}, err
		}
		// The decoder fills what it can: type errors that are only about values the
		// unset variables left empty do not stop the decoding.
		var errs []error
		for _, msg := range te.Errors {
			if e := w.locate(msg); !w.unset.covers(e) {
				errs = append(errs, e)
			}
		}
		if len(errs) > 0 {
			return unsetVars{}, capErrors(append(slices.Clone(w.unset.errs), errs...))
		}
	}
	return w.unset, nil
}

// unsetVars lists the key paths whose values name a ${VAR} that is not set, and an
// error for each variable.
type unsetVars struct {
	paths []string
	errs  []error
}

// covers reports whether err is about the value at one of the paths, or a file secret
// whose *_file key is one of them: that value is unknown, so a problem found in it
// would be a consequence of the unset variable, not a problem of its own.
func (u unsetVars) covers(err error) bool {
	msg := err.Error()
	for _, p := range u.paths {
		if strings.HasPrefix(msg, p+":") || strings.HasPrefix(msg, p+".") || strings.HasPrefix(msg, p+"[") {
			return true
		}
		if base, ok := strings.CutSuffix(p, "_file"); ok && strings.HasPrefix(msg, base+":") {
			return true
		}
	}
	return false
}

// capErrors joins errs, the first maxErrors of them and a count of the rest.
func capErrors(errs []error) error {
	if n := len(errs); n > maxErrors {
		errs = append(errs[:maxErrors:maxErrors], fmt.Errorf("and %d more problems", n-maxErrors))
	}
	return errors.Join(errs...)
}

type walker struct {
	env    func(string) (string, bool)
	accept func(m *yaml.Node, key string) bool // see decodeStrict
	errs   []error
	lines  map[int]string // line -> key path of the value on it, for decode errors
	// expanded holds the scalars already expanded: an alias visits its anchor's node
	// again, which must not expand a second time ("$${X}" would become X's value).
	expanded map[*yaml.Node]bool
	// visits counts the nodes walked, aliases walked again each time: a few aliases
	// can make a small file describe billions of values.
	visits int
	unset  unsetVars // also in errs
}

// maxErrors bounds the problems reported of one file's structure.
const maxErrors = 50

// maxVisits bounds the values a file may describe, aliases expanded; a configuration
// has a few thousand.
const maxVisits = 20_000

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	if !w.spend(path) {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	w.lines[n.Line] = path
	switch n.Kind {
	case yaml.ScalarNode:
		if strings.Contains(n.Value, "$") && !w.expanded[n] {
			w.expanded[n] = true
			w.expand(n, path)
			if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
				n.Tag = "" // re-resolve: "${PAGE_SIZE}" may expand to an integer
			}
		}
	case yaml.MappingNode:
		switch t.Kind() {
		case reflect.Struct:
			fields := yamlFields(t)
			lines := map[string]int{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, val := n.Content[i], n.Content[i+1]
				child := join(path, k.Value)
				if !w.unique(lines, k, child) {
					continue
				}
				f, ok := fields[k.Value]
				switch {
				case ok:
					w.walk(val, f, child)
				case hasInlineMap(t) && w.accept(n, k.Value):
					w.walk(val, reflect.TypeFor[any](), child)
				default:
					w.errs = append(w.errs, fmt.Errorf("%s: unknown key (line %d)", child, k.Line))
				}
			}
		case reflect.Map:
			lines := map[string]int{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				child := join(path, n.Content[i].Value)
				if w.unique(lines, n.Content[i], child) {
					w.walk(n.Content[i+1], t.Elem(), child)
				}
			}
		default:
			w.errs = append(w.errs, fmt.Errorf("%s: want a %s, got a mapping (line %d)", orRoot(path), kindName(t), n.Line))
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			w.errs = append(w.errs, fmt.Errorf("%s: want a %s, got a list (line %d)", orRoot(path), kindName(t), n.Line))
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	}
}

// spend counts one node walked and reports whether the walk may go on.
func (w *walker) spend(path string) bool {
	w.visits++
	if w.visits == maxVisits+1 {
		w.errs = append(w.errs, fmt.Errorf("%s: the file describes more than %d values (aliases expanded); a configuration needs far fewer", orRoot(path), maxVisits))
	}
	return w.visits <= maxVisits
}

// unique records key k of a mapping in lines (key -> line) and reports whether it is
// the first of its name there; a repeated key is an error.
func (w *walker) unique(lines map[string]int, k *yaml.Node, path string) bool {
	if !w.spend(path) {
		return false
	}
	if first, dup := lines[k.Value]; dup {
		w.errs = append(w.errs, fmt.Errorf("%s: key repeated (line %d, first on line %d)", path, k.Line, first))
		return false
	}
	lines[k.Value] = k.Line
	return true
}

func (w *walker) expand(n *yaml.Node, path string) {
	var missing []string
	n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		v, ok := w.env(name)
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	for _, name := range missing {
		err := fmt.Errorf("%s: environment variable %s is not set", path, name)
		w.errs = append(w.errs, err)
		w.unset.errs = append(w.unset.errs, err)
	}
	if len(missing) > 0 {
		w.unset.paths = append(w.unset.paths, path)
	}
}

var lineRef = regexp.MustCompile(`^line (\d+): (.*)$`)

// locate rewrites a yaml decode message "line N: cannot unmarshal …" to start with the
// key path of line N.
func (w *walker) locate(msg string) error {
	m := lineRef.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	line, _ := strconv.Atoi(m[1])
	detail := strings.Replace(m[2], "cannot unmarshal ", "", 1)
	if path, ok := w.lines[line]; ok && path != "" {
		return fmt.Errorf("%s: %s (line %d)", path, readableType(detail), line)
	}
	return fmt.Errorf("line %d: %s", line, readableType(detail))
}

// valueError rewrites the message of an error decoding the value at path ("line N:
// cannot unmarshal …") to start with path, as locate does.
func valueError(path string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	m := lineRef.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%s: %s", path, msg)
	}
	detail := strings.Replace(m[2], "cannot unmarshal ", "", 1)
	return fmt.Errorf("%s: %s (line %s)", path, readableType(detail), m[1])
}

var typeRef = regexp.MustCompile(`!!(\w+) ` + "`" + `([^` + "`" + `]*)` + "`" + ` into (\S+)`)

func readableType(s string) string {
	m := typeRef.FindStringSubmatch(s)
	if m == nil {
		return s
	}
	want := m[3]
	switch {
	case strings.HasPrefix(want, "int"):
		want = "an integer"
	case strings.HasPrefix(want, "float"):
		want = "a number"
	case want == "bool":
		want = "true or false"
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	default:
		want = "a " + want
	}
	return fmt.Sprintf("%q is not %s", m[2], want)
}

// hasInlineMap reports whether struct type t collects its undeclared keys in a map
// field tagged ",inline".
func hasInlineMap(t reflect.Type) bool {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == "" && opts == "inline" && f.Type.Kind() == reflect.Map {
			return true
		}
	}
	return false
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out[name] = f.Type
	}
	return out
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "mapping"
	case reflect.Slice:
		return "list"
	default:
		return "single value"
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

// with joins the unset variables' errors and those of errs that are not about the
// values they left unknown; nil when there are none.
func (u unsetVars) with(errs []error) error {
	all := slices.Clone(u.errs)
	for _, err := range errs {
		if !u.covers(err) {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}
