package livequery_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chorus-sync/chorus"
	"github.com/chorus-sync/chorus/internal/livequery"
)

func decode(t testing.TB, s string) any {
	t.Helper()
	v, err := livequery.Decode(json.RawMessage(s))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMatch(t *testing.T) {
	const item = `{"名前":"花子","status":"open","n":30,"ok":true,"tags":["red","blue",7],"owner":{"name":"Alice","team":"eng"},"nil":null}`
	cases := []struct {
		q    string
		want bool
	}{
		{`key == "k1"`, true},
		{`key EQ "k1"`, true},
		{`key eq "k2"`, false},
		{`key != "k2"`, true},
		{`key NOT_EQ "k1"`, false},
		{`key not_eq "k1"`, false},
		{`data.status == "open"`, true},
		{`data.status == "closed"`, false},
		{`data.n == "30"`, true},
		{`data.ok == "true"`, true},
		{`data.owner.name == "Alice"`, true},
		{`data.owner.name contains "lic"`, true},
		{`data.owner.name CONTAINS "LIC"`, false},
		{`data.owner.team IN ["ops", "eng"]`, true},
		{`data.owner.team in ["ops"]`, false},
		{`data.owner.team NOT_IN ["ops"]`, true},
		{`data.owner.team not_in ["ops", "eng"]`, false},
		{`data.owner.team in []`, false},
		{`data.tags == "blue"`, true},
		{`data.tags == "7"`, true},
		{`data.tags IN ["green", "red"]`, true},
		{`data.tags contains "lu"`, true},
		{`data.tags != "blue"`, false},
		{`data.missing == "x"`, false},
		{`data.missing != "x"`, true},
		{`data.missing not_in ["x"]`, true},
		{`data.nil == "null"`, false},
		{`data.owner == "x"`, false},
		{`data.status.deeper == "x"`, false},
		{`data.status == "open" AND key == "k1"`, true},
		{`data.status == "open" && key == "k2"`, false},
		{`data.status == "closed" OR key == "k1"`, true},
		{`data.status == "closed" || key == "k2"`, false},
		{`data.status == "closed" and key == "k1" or data.n == "30"`, true},    // AND binds tighter
		{`data.status == "closed" and (key == "k1" or data.n == "30")`, false}, // parentheses
		{`(data.status == "open" OR data.owner.team IN ["es", "en"]) AND data.owner.team EQ "eng"`, true},
		{`((key == "k1"))`, true},
		{"key\t==\n\"k1\"", true},
		{`key=="k1"&&data.n=="30"`, true},
		{`data.owner.name == "Al\u0069ce"`, true},
		{`key == "k\"1"`, false},
		{`data.名前 == "花子"`, true},
	}
	data := decode(t, item)
	for _, c := range cases {
		q, err := livequery.Parse(c.q)
		if err != nil {
			t.Errorf("Parse(%q) = %v", c.q, err)
			continue
		}
		if got := q.Match("k1", data); got != c.want {
			t.Errorf("Parse(%q).Match(k1, item) = %v, want %v", c.q, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	many := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(`key == "%d"`, i)
		}
		return strings.Join(parts, " OR ")
	}
	arr := func(n int) string {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = fmt.Sprintf(`"%d"`, i)
		}
		return "key IN [" + strings.Join(vals, ",") + "]"
	}
	cases := []struct {
		q    string
		code int
	}{
		{``, 54507},
		{`   `, 54507},
		{`key`, 54507},
		{`key ==`, 54507},
		{`key == k1`, 54507},
		{`key == 5`, 54507},
		{`key == 'k1'`, 54507},
		{`key = "k1"`, 54507},
		{`name == "x"`, 54507},
		{`data == "x"`, 54507},
		{`data. == "x"`, 54507},
		{`data..a == "x"`, 54507},
		{`key == "k1" AND`, 54507},
		{`key == "k1" key == "k2"`, 54507},
		{`(key == "k1"`, 54507},
		{`key == "k1")`, 54507},
		{`key IN "k1"`, 54507},
		{`key IN ["k1"`, 54507},
		{`key IN ["k1",]`, 54507},
		{`key IN ["k1" "k2"]`, 54507},
		{`key == ["k1"]`, 54507},
		{`key == "unterminated`, 54507},
		{`key == "bad \x escape"`, 54507},
		{`key == "k1" And key == "k2"`, 54507},
		{`NOT key == "k1"`, 54507},
		{`key == "\xff"`, 54507},
		{strings.Repeat("(", 100) + `key == "a"` + strings.Repeat(")", 100), 54507},
		{`key == "` + strings.Repeat("a", livequery.MaxLength) + `"`, 54507},
		{many(15) + ` AND key == "x"`, 54509}, // 31 operators
		{many(40), 54509},
		{arr(livequery.MaxArrayItems), 54510},
	}
	for _, c := range cases {
		_, err := livequery.Parse(c.q)
		if got := chorus.ErrorCode(err); got != c.code {
			t.Errorf("Parse(%.60q) = %v, want code %d", c.q, err, c.code)
		}
		if e := chorus.AsError(err); e.Status != 400 {
			t.Errorf("Parse(%.60q) status = %d, want 400", c.q, e.Status)
		}
	}
}

func TestLimits(t *testing.T) {
	// 29 operators are allowed; 30 are not.
	ok := strings.Repeat(`key == "a" OR `, 14) + `key == "b"` // 15 eq + 14 or
	q, err := livequery.Parse(ok)
	if err != nil || q.Operators() != 29 {
		t.Fatalf("Parse(29 operators) = %v, %v", q, err)
	}
	if _, err := livequery.Parse(ok + ` AND key IN ["x"]`); chorus.ErrorCode(err) != 54509 {
		t.Fatalf("Parse(31 operators) = %v, want 54509", err)
	}
	if _, err := livequery.Parse(ok + ` AND key`); chorus.ErrorCode(err) != 54509 {
		t.Fatalf("Parse(30 operators, malformed) = %v, want 54509 (counted before parsing)", err)
	}
	vals := strings.Repeat(`"v",`, livequery.MaxArrayItems-2) + `"w"`
	if _, err := livequery.Parse(`key IN [` + vals + `]`); err != nil {
		t.Fatalf("Parse(array of %d) = %v", livequery.MaxArrayItems-1, err)
	}
}

func TestDecode(t *testing.T) {
	for _, s := range []string{"", " ", "{}"} {
		v, err := livequery.Decode(json.RawMessage(s))
		if err != nil {
			t.Fatalf("Decode(%q) = %v", s, err)
		}
		if m, ok := v.(map[string]any); !ok || len(m) != 0 {
			t.Fatalf("Decode(%q) = %#v, want an empty object", s, v)
		}
	}
	if _, err := livequery.Decode(json.RawMessage("{")); err == nil {
		t.Fatal("Decode({) succeeded")
	}
}

// FuzzParse: no panic, bounded time, errors are 54507/54509/54510 with
// status 400, limits hold, and a parsed query evaluates.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`key == "a"`,
		`(data.status == "open" OR data.lang IN ["es", "en"]) AND data.team EQ "engineering"`,
		`data.a.b contains "x" && key not_in ["a","b"] || data.c NOT_EQ "\u00e9"`,
		`((((key != "a"))))`,
		`key IN []`,
		`key == "a" AND`,
		`"`,
	} {
		f.Add(s)
	}
	data := map[string]any{"status": "open", "a": map[string]any{"b": "xyz"}, "lang": []any{"es"}}
	f.Fuzz(func(t *testing.T, s string) {
		start := time.Now()
		q, err := livequery.Parse(s)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Parse took %v", d)
		}
		if err != nil {
			e := chorus.AsError(err)
			if e.Status != 400 || (e.Code != 54507 && e.Code != 54509 && e.Code != 54510) {
				t.Fatalf("Parse(%q) = %v: not a query error", s, err)
			}
			return
		}
		if q.Operators() >= livequery.MaxOperators || q.Operators() < 1 {
			t.Fatalf("Parse(%q) has %d operators", s, q.Operators())
		}
		if q.String() != s {
			t.Fatalf("String() = %q, want %q", q.String(), s)
		}
		// Parsing is stable, and so is evaluation.
		q2, err := livequery.Parse(s)
		if err != nil || q2.Match("k", data) != q.Match("k", data) || q2.Match("a", nil) != q.Match("a", nil) {
			t.Fatalf("reparse of %q differs: %v", s, err)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	q, err := livequery.Parse(`(data.status == "open" OR data.team IN ["eng", "ops", "qa"]) AND data.who.name contains "nn" AND key != "x"`)
	if err != nil {
		b.Fatal(err)
	}
	raw := json.RawMessage(`{"status":"open","team":"eng","n":3,"who":{"name":"Ann"},"tags":["a","b","c"]}`)
	b.Run("decode+match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			v, _ := livequery.Decode(raw)
			if !q.Match("k", v) {
				b.Fatal("no match")
			}
		}
	})
	v, _ := livequery.Decode(raw)
	b.Run("match", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !q.Match("k", v) {
				b.Fatal("no match")
			}
		}
	})
}
