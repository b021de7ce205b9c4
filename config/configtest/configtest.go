// Package configtest checks, for one provider, that the configuration decodes the
// provider's own keys (provider.Provider.Keys) as they are declared: strict keys,
// required credentials, *_file twins of secrets and their redaction. Adapter packages
// call it from their external tests.
package configtest

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
)

// CheckKeys checks provider id's keys through config.Parse and config.Load. valid
// holds a value of each of its Required keys (and any other key to set) that the
// adapter accepts; it must not set a Bool key.
//
// It checks that: a source with valid parses, its Settings.Values holding valid and
// the defaults of the keys it leaves out; a key the provider does not declare is an
// error naming its key path and line; each Required key left out is an error naming
// it; each Secret key can be read from its _file twin instead (a file other users may
// read draws a warning naming the twin), and is redacted in `config check` output and
// listed by Config.Secrets.
func CheckKeys(t *testing.T, id string, valid map[string]string) {
	t.Helper()
	p, ok := poller.Providers[id]
	if !ok {
		t.Fatalf("%s is not a registered provider", id)
	}
	want := maps.Clone(valid)
	for _, k := range p.Keys {
		if _, set := want[k.Name]; !set && k.Default != "" {
			want[k.Name] = k.Default
		}
	}
	t.Run("valid", func(t *testing.T) {
		cfg, err := parse(id, valid, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Sources[0].Settings.Values; !maps.Equal(got, want) {
			t.Errorf("values %v, want %v", got, want)
		}
		checkRedacted(t, cfg, p.Keys, valid)
	})
	t.Run("unknown key", func(t *testing.T) {
		_, err := parse(id, valid, "  no_such_key: x\n")
		if w := "sources[0].no_such_key: unknown key (line "; err == nil || !strings.HasPrefix(err.Error(), w) {
			t.Errorf("err = %v, want %s…", err, w)
		}
	})
	for _, k := range p.Keys {
		if k.Required {
			t.Run("missing "+k.Name, func(t *testing.T) {
				without := maps.Clone(valid)
				delete(without, k.Name)
				_, err := parse(id, without, "")
				w := fmt.Sprintf("sources[0].%s: is required for %s", k.Name, id)
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want %s", err, w)
				}
			})
		}
		if k.Secret {
			t.Run(k.Name+"_file", func(t *testing.T) {
				checkFileTwin(t, id, valid, k.Name)
			})
		}
	}
}

// checkRedacted checks that every Secret key of valid is hidden from `config check`
// output and listed by Config.Secrets.
func checkRedacted(t *testing.T, cfg *config.Config, keys []provider.Key, valid map[string]string) {
	t.Helper()
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	secrets := cfg.Secrets()
	for _, k := range keys {
		v := valid[k.Name]
		if !k.Secret || v == "" {
			continue
		}
		if strings.Contains(string(out), v) || !strings.Contains(string(out), k.Name+": "+config.Redacted) {
			t.Errorf("%s is not redacted in the effective configuration:\n%s", k.Name, out)
		}
		if !slices.Contains(secrets, config.Secret{Key: k.Name, Value: v}) {
			t.Errorf("Secrets() = %v, without %s", secrets, k.Name)
		}
	}
}

// checkFileTwin checks that secret key name is read from name_file, and that a file
// other users may read draws a warning naming name_file.
func checkFileTwin(t *testing.T, id string, valid map[string]string, name string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte(valid[name]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	without := maps.Clone(valid)
	delete(without, name)
	doc := source(id, without, fmt.Sprintf("  %s_file: %q\n", name, file))
	path := filepath.Join(dir, "watcher.yaml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sources[0].Settings.Value(name); got != valid[name] {
		t.Errorf("%s_file gave %q, want the file's trimmed content", name, got)
	}
	w := fmt.Sprintf("sources[0].%s_file: %q holds a secret but has mode 0644", name, file)
	if !slices.ContainsFunc(cfg.Warnings, func(s string) bool { return strings.HasPrefix(s, w) }) {
		t.Errorf("warnings %q, want one starting %s", cfg.Warnings, w)
	}
	_, err = parse(id, valid, fmt.Sprintf("  %s_file: %q\n", name, file))
	if w := fmt.Sprintf("sources[0].%s: set either %s or %s_file, not both", name, name, name); err == nil || err.Error() != w {
		t.Errorf("both set: err = %v, want %s", err, w)
	}
}

// parse parses a file holding one source of provider id with keys and the lines extra.
func parse(id string, keys map[string]string, extra string) (*config.Config, error) {
	return config.Parse(source(id, keys, extra), func(string) (string, bool) { return "", false }, os.ReadFile)
}

// source renders a file holding one source of provider id with keys and the lines
// extra.
func source(id string, keys map[string]string, extra string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "sources:\n- name: s\n  provider: %s\n", id)
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(&b, "  %s: %q\n", k, keys[k])
	}
	b.WriteString(extra)
	return []byte(b.String())
}
