package poller_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
)

// TestRegistrationComplete keeps CONTRIBUTING.md's "Adding a provider" true: every
// provider of poller.Providers has a simulator registration, its adapter package has
// golden fixtures showing exactly the kinds its providers declare (Statuses), a contract-suite
// run (providertest.CheckSource) and a check of its configuration keys
// (configtest.CheckKeys) in its tests, and README.md's provider table has its row.
func TestRegistrationComplete(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	declared := map[string][]string{} // package dir -> kinds its providers declare
	for _, id := range poller.ProviderIDs() {
		p := poller.Providers[id]
		dir, ctor := adapterOf(t, p.New)
		declared[dir] = append(declared[dir], p.Kinds()...)
		if _, ok := p.Statuses[p.Kind]; !ok {
			t.Errorf("%s: Statuses has no table of its top-level kind %q", id, p.Kind)
		}
		if !slices.Contains(sim.ProviderIDs(), id) {
			t.Errorf("%s: no simulator registration (sim's simulatedProviders)", id)
		}
		if !strings.Contains(string(readme), "\n| `"+id+"` |") {
			t.Errorf("%s: no row in README.md's provider table", id)
		}
		tests := testFuncs(t, dir)
		if !slices.ContainsFunc(tests, func(body string) bool {
			return strings.Contains(body, "providertest.CheckSource(") && strings.Contains(body, ctor+"(")
		}) {
			t.Errorf("%s: no test of poller/%s calls providertest.CheckSource with a source built by %s", id, dir, ctor)
		}
		if !slices.ContainsFunc(tests, func(body string) bool {
			return strings.Contains(body, "configtest.CheckKeys(") && strings.Contains(body, `"`+id+`"`)
		}) {
			t.Errorf("%s: no test of poller/%s calls configtest.CheckKeys for it", id, dir)
		}
	}
	for dir, kinds := range declared {
		slices.Sort(kinds)
		kinds = slices.Compact(kinds)
		if golden := goldenKinds(t, dir); !slices.Equal(golden, kinds) {
			t.Errorf("poller/%s: golden fixtures show the kinds %v, its providers declare %v (Kind and Statuses)", dir, golden, kinds)
		}
	}
}

// adapterOf returns the directory under poller of the package defining the provider
// constructor fn, and the constructor's name.
func adapterOf(t *testing.T, fn any) (dir, name string) {
	t.Helper()
	full := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	rest, ok := strings.CutPrefix(full, "github.com/payments-watcher/watcher/poller/")
	dir, name, dot := strings.Cut(rest, ".")
	if !ok || !dot || strings.Contains(name, ".") {
		t.Fatalf("provider constructor %s is not a named function of an adapter package under poller", full)
	}
	return dir, name
}

// testFuncs returns the source text of every function of the _test.go files of the
// package in dir.
func testFuncs(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, src, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				out = append(out, string(src[fd.Pos()-f.FileStart:fd.End()-f.FileStart]))
			}
		}
	}
	return out
}

// goldenKinds returns the sorted kinds of every item, nested ones included, of the
// golden files under dir/testdata; it fails when there are none.
func goldenKinds(t *testing.T, dir string) []string {
	t.Helper()
	type item struct {
		Kind   string `json:"kind"`
		Nested []item `json:"nested"`
	}
	var kinds []string
	var add func(items []item)
	add = func(items []item) {
		for _, it := range items {
			kinds = append(kinds, it.Kind)
			add(it.Nested)
		}
	}
	files := 0
	err := filepath.WalkDir(filepath.Join(dir, "testdata"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".golden") {
			return err
		}
		files++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var page struct {
			Items []item `json:"items"`
		}
		if json.Unmarshal(data, &page) == nil {
			add(page.Items)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("poller/%s: golden fixtures: %v", dir, err)
	}
	if files == 0 {
		t.Errorf("poller/%s: no golden fixtures (testdata/*/*.golden)", dir)
	}
	slices.Sort(kinds)
	return slices.Compact(kinds)
}
