package sim

import (
	"slices"
	"testing"
)

// TestSources checks the registration table as its users see it: one source per
// simulated provider, in ProviderIDs order, each with a distinct name, a list path the
// simulator serves and credentials, every call returning its own copy of the keys.
func TestSources(t *testing.T) {
	srcs := Sources()
	var ids, names []string
	for _, s := range srcs {
		ids = append(ids, s.Provider)
		if slices.Contains(names, s.Name) {
			t.Errorf("source name %q is used twice", s.Name)
		}
		names = append(names, s.Name)
		if s.ListPath == "" || len(s.Keys) == 0 {
			t.Errorf("%s: list path %q, keys %v", s.Provider, s.ListPath, s.Keys)
		}
	}
	if !slices.Equal(ids, ProviderIDs()) {
		t.Errorf("sources of %v, want %v", ids, ProviderIDs())
	}
	srcs[0].Keys["api_key"] = "changed"
	if Sources()[0].Keys["api_key"] == "changed" {
		t.Error("a caller's change to Keys shows in the next call")
	}
	if got := SourcesWith(Credentials{CircleCPNKey: "A:B:C"})[0].Keys["api_key"]; got != "A:B:C" {
		t.Errorf("SourcesWith gave api_key %q", got)
	}
	if got := (Source{Keys: map[string]string{"b": "2", "a": "x\"y"}}).KeyLines("  "); got != "  a: \"x\\\"y\"\n  b: \"2\"\n" {
		t.Errorf("KeyLines = %q", got)
	}
}
