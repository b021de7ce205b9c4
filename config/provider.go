package config

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
)

// A source's provider keys are described by its provider (provider.Provider.Keys);
// this file decodes, checks and reports them from those descriptions alone.

// acceptProviderKey reports whether source mapping m may hold key besides the keys
// every source has: whether the provider m names declares it. Any key is accepted
// of a source whose provider is absent or unknown, which the provider check reports.
func acceptProviderKey(m *yaml.Node, key string) bool {
	id := ""
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "provider" {
			v := m.Content[i+1]
			if v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			id = v.Value
		}
	}
	p, ok := poller.Providers[id]
	return !ok || accepts(p, key)
}

// accepts reports whether p declares key, or key is the _file twin of one of its
// Secret keys.
func accepts(p provider.Provider, key string) bool {
	if _, ok := p.Key(key); ok {
		return true
	}
	base, ok := strings.CutSuffix(key, "_file")
	k, known := p.Key(base)
	return ok && known && k.Secret
}

// providerValues decodes the provider keys of source rs, whose key path is key: a
// Secret key from its value or its _file twin, a Bool key as "true" or "false", a key
// left out as its default. It returns the keys whose value is not "", and reports
// every problem naming its key path.
func (v *validator) providerValues(key string, rs rawSource, p provider.Provider) map[string]string {
	// The walker checked the keys against the provider unless the provider was not
	// known yet where they were written (a ${VAR} after them).
	for _, name := range slices.Sorted(maps.Keys(rs.Own)) {
		if !accepts(p, name) {
			n := rs.Own[name]
			v.addf(key+"."+name, "unknown key (line %d)", n.Line)
		}
	}
	values := map[string]string{}
	for _, k := range p.Keys {
		path := key + "." + k.Name
		val, ok := v.scalar(path, rs.Own, k.Name, k.Bool)
		if !ok {
			continue
		}
		if k.Secret {
			file, _ := v.scalar(path+"_file", rs.Own, k.Name+"_file", false)
			val = v.secret(path, val, file)
		}
		if val == "" {
			val = k.Default
		}
		if val != "" {
			values[k.Name] = val
		}
	}
	return values
}

// scalar returns the value of key name in own as text, "" when it is absent or null;
// a Bool key's value must be true or false. ok is false after a problem, which it
// reports naming path.
func (v *validator) scalar(path string, own map[string]yaml.Node, name string, isBool bool) (val string, ok bool) {
	n, set := own[name]
	if !set {
		return "", true
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = *n.Alias
	}
	if n.ShortTag() == "!!null" {
		return "", true
	}
	if isBool {
		var b bool
		if err := n.Decode(&b); err != nil {
			v.errs = append(v.errs, valueError(path, err))
			return "", false
		}
		return strconv.FormatBool(b), true
	}
	if err := n.Decode(&val); err != nil {
		v.errs = append(v.errs, valueError(path, err))
		return "", false
	}
	return val, true
}

// requireCredentials reports each Required key of p that values leaves empty, unless
// a problem with it is reported already.
func (v *validator) requireCredentials(key, id string, p provider.Provider, values map[string]string) {
	for _, k := range p.Keys {
		if !k.Required || values[k.Name] != "" || v.has(key+"."+k.Name) {
			continue
		}
		if k.Secret {
			v.addf(key+"."+k.Name, "is required for %s (or %s_file)", id, k.Name)
		} else {
			v.addf(key+"."+k.Name, "is required for %s", id)
		}
	}
}

// Secret is one secret value of the configuration and the key that holds it.
type Secret struct {
	// Key is the key's name: a provider key's own name ("api_key"), or the path of
	// a NATS one ("nats.token").
	Key   string
	Value string
}

// Secrets returns the secret values c holds: each source's Secret provider keys, in
// source and declaration order, then the NATS token and password; only those set.
func (c *Config) Secrets() []Secret {
	var out []Secret
	add := func(key, val string) {
		if val != "" {
			out = append(out, Secret{key, val})
		}
	}
	for _, s := range c.Sources {
		for _, k := range s.Provider.Keys {
			if k.Secret {
				add(k.Name, s.Settings.Value(k.Name))
			}
		}
	}
	add("nats.token", c.NATS.Token)
	add("nats.password", c.NATS.Password)
	return out
}
