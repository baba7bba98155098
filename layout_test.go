package chorus_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/chorus-sync/chorus"

// packages maps each package directory of the module to the imports of its
// non-test files.
func packages(t *testing.T) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		if _, ok := pkgs[dir]; !ok {
			pkgs[dir] = nil
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			pkgs[dir] = append(pkgs[dir], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// TestPackageDocs: every package has a doc.go whose comment begins
// "Package <name>" ("Command <name>" for commands).
func TestPackageDocs(t *testing.T) {
	for dir := range packages(t) {
		src, err := os.ReadFile(filepath.Join(dir, "doc.go"))
		if err != nil {
			t.Errorf("%s: no doc.go", dir)
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), "doc.go", src, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		want := "Package " + f.Name.Name + " "
		if f.Name.Name == "main" {
			want = "Command " + filepath.Base(dir) + " "
		}
		if f.Doc == nil || !strings.HasPrefix(f.Doc.Text(), want) {
			t.Errorf("%s/doc.go: package comment does not begin %q", dir, want)
		}
	}
}

// TestImportRules guards the architecture: the codec and the root package
// import nothing of ours; adapters import the root, never each other; only
// cmd/ and internal/server wire them together. internal/ratelog (log-line
// rate limits) is a leaf that imports nothing of ours, and every package
// may use it.
func TestImportRules(t *testing.T) {
	ours := func(p string) (string, bool) {
		if p == module {
			return ".", true
		}
		rest, ok := strings.CutPrefix(p, module+"/")
		return rest, ok
	}
	for dir, imports := range packages(t) {
		for _, imp := range imports {
			dep, ok := ours(imp)
			if !ok {
				continue
			}
			var bad bool
			switch {
			case dir == "internal/ratelog":
				bad = true
			case dep == "internal/ratelog" && dir != "." && dir != "protocol":
				// a leaf: every package but the root and the codec may use it
			case dir == "." || dir == "protocol":
				bad = true
			case strings.HasPrefix(dir, "internal/store/") || strings.HasPrefix(dir, "internal/bus/"):
				bad = dep != "." && !strings.HasSuffix(dep, "test") && dep != "internal/store/groupcommit" && dep != "internal/store/sqlrow"
			case dir == "token" || dir == "internal/engine" || dir == "internal/webhook" || dir == "internal/livequery":
				bad = dep != "."
			case dir == "internal/httpapi" || dir == "internal/gateway" || dir == "internal/admin" || dir == "internal/accountapi":
				bad = strings.HasPrefix(dep, "internal/store") || strings.HasPrefix(dep, "internal/bus") ||
					dep == "internal/server" || dep == "internal/httpapi" && dir != "internal/httpapi"
			}
			if bad {
				t.Errorf("%s imports %s", dir, imp)
			}
		}
	}
}
