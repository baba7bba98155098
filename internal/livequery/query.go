package livequery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/chorus-sync/chorus"
)

// Limits of an expression.
const (
	// MaxOperators: an expression holds fewer operators than this (and,
	// or, eq, not_eq, in, not_in and contains all count), as on Twilio.
	MaxOperators = 30
	// MaxArrayItems: an in/not_in array holds fewer items than this.
	MaxArrayItems = 30
	// MaxLength bounds the expression text.
	MaxLength = 8 << 10
)

// op is a comparison operator.
type op uint8

const (
	opEq op = iota + 1
	opNotEq
	opIn
	opNotIn
	opContains
)

// node is one node of a parsed expression: an AND or OR of its children,
// or a comparison of a field with a value.
type node struct {
	kind     nodeKind
	children []*node // and, or

	path   []string // comparison: nil = the item key; else the path in data
	op     op
	values []string // one value; or the array of in/not_in
}

type nodeKind uint8

const (
	nodeAnd nodeKind = iota + 1
	nodeOr
	nodeCmp
)

// Query is a parsed Live Query expression.
type Query struct {
	root *node
	ops  int
	src  string
}

// String returns the expression as it was given.
func (q *Query) String() string { return q.src }

// Operators returns the number of operators in the expression.
func (q *Query) Operators() int { return q.ops }

// Parse parses a Live Query expression. Its errors are *chorus.Error with
// code 54507 (malformed), 54509 (too many operators) or 54510 (an array
// with too many items).
func Parse(s string) (*Query, error) {
	if len(s) > MaxLength {
		return nil, chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: longer than %d bytes", MaxLength)
	}
	if !utf8.ValidString(s) {
		return nil, chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: not valid UTF-8")
	}
	p := &parser{src: s}
	if err := p.lex(); err != nil {
		return nil, err
	}
	if len(p.toks) == 0 {
		return nil, chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: empty expression")
	}
	// Count before parsing so that a long expression fails with 54509
	// whatever else is wrong further on.
	ops := 0
	for _, t := range p.toks {
		if t.kind == tokOp || t.kind == tokAnd || t.kind == tokOr {
			ops++
		}
	}
	if ops >= MaxOperators {
		return nil, chorus.Errorf(chorus.ErrQueryOperators, "Query expression contains too many operators: %d, the limit is fewer than %d", ops, MaxOperators)
	}
	root, err := p.parseOr(0)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.toks) {
		return nil, p.errorf("unexpected %s", p.toks[p.pos].describe())
	}
	return &Query{root: root, ops: ops, src: s}, nil
}

// Match reports whether the item with key and decoded data (see Decode) is
// in the query's result.
func (q *Query) Match(key string, data any) bool { return q.root.match(key, data) }

func (n *node) match(key string, data any) bool {
	switch n.kind {
	case nodeAnd:
		for _, c := range n.children {
			if !c.match(key, data) {
				return false
			}
		}
		return true
	case nodeOr:
		for _, c := range n.children {
			if c.match(key, data) {
				return true
			}
		}
		return false
	}
	var field any = key
	if n.path != nil {
		field = lookup(data, n.path)
	}
	switch n.op {
	case opEq:
		return anyValue(field, func(v string) bool { return v == n.values[0] })
	case opNotEq:
		return !anyValue(field, func(v string) bool { return v == n.values[0] })
	case opContains:
		return anyValue(field, func(v string) bool { return strings.Contains(v, n.values[0]) })
	case opIn:
		return anyValue(field, n.in)
	case opNotIn:
		return !anyValue(field, n.in)
	}
	return false
}

func (n *node) in(v string) bool {
	for _, w := range n.values {
		if v == w {
			return true
		}
	}
	return false
}

// lookup follows path through nested JSON objects; nil when absent.
func lookup(data any, path []string) any {
	for _, seg := range path {
		m, ok := data.(map[string]any)
		if !ok {
			return nil
		}
		data = m[seg]
	}
	return data
}

// anyValue reports whether f holds for one of field's text values: a
// string, a number or a boolean, or a scalar element of an array.
func anyValue(field any, f func(string) bool) bool {
	if arr, ok := field.([]any); ok {
		for _, e := range arr {
			if v, ok := scalar(e); ok && f(v) {
				return true
			}
		}
		return false
	}
	v, ok := scalar(field)
	return ok && f(v)
}

func scalar(x any) (string, bool) {
	switch v := x.(type) {
	case string:
		return v, true
	case json.Number:
		return string(v), true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	}
	return "", false
}

// Decode decodes an item's JSON data for Match, keeping numbers as their
// text. Empty data is an empty object.
func Decode(raw json.RawMessage) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("livequery: decode data: %w", err)
	}
	return v, nil
}

// Tokens.

type tokKind uint8

const (
	tokField tokKind = iota + 1 // a word: key, data.a.b (checked by the parser)
	tokString
	tokOp // comparison operator
	tokAnd
	tokOr
	tokLParen
	tokRParen
	tokLBrack
	tokRBrack
	tokComma
)

type token struct {
	kind tokKind
	at   int    // byte offset
	text string // source text; the decoded value for tokString
	op   op
}

func (t token) describe() string {
	if t.kind == tokString {
		return fmt.Sprintf("string %q at %d", t.text, t.at)
	}
	return fmt.Sprintf("%q at %d", t.text, t.at)
}

type parser struct {
	src  string
	toks []token
	pos  int
}

func (p *parser) errorf(format string, args ...any) error {
	return chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: "+format, args...)
}

var words = map[string]token{
	"and": {kind: tokAnd}, "AND": {kind: tokAnd},
	"or": {kind: tokOr}, "OR": {kind: tokOr},
	"eq": {kind: tokOp, op: opEq}, "EQ": {kind: tokOp, op: opEq},
	"not_eq": {kind: tokOp, op: opNotEq}, "NOT_EQ": {kind: tokOp, op: opNotEq},
	"in": {kind: tokOp, op: opIn}, "IN": {kind: tokOp, op: opIn},
	"not_in": {kind: tokOp, op: opNotIn}, "NOT_IN": {kind: tokOp, op: opNotIn},
	"contains": {kind: tokOp, op: opContains}, "CONTAINS": {kind: tokOp, op: opContains},
}

// isWordByte: words are fields and keywords; bytes of non-ASCII letters
// are word bytes, so that data.名前 is a field.
func isWordByte(c byte) bool {
	return c >= 0x80 || c == '_' || c == '-' || c == '.' || c == '$' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// lex splits the source into tokens.
func (p *parser) lex() error {
	s := p.src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(':
			p.toks = append(p.toks, token{kind: tokLParen, at: i, text: "("})
			i++
		case c == ')':
			p.toks = append(p.toks, token{kind: tokRParen, at: i, text: ")"})
			i++
		case c == '[':
			p.toks = append(p.toks, token{kind: tokLBrack, at: i, text: "["})
			i++
		case c == ']':
			p.toks = append(p.toks, token{kind: tokRBrack, at: i, text: "]"})
			i++
		case c == ',':
			p.toks = append(p.toks, token{kind: tokComma, at: i, text: ","})
			i++
		case strings.HasPrefix(s[i:], "=="):
			p.toks = append(p.toks, token{kind: tokOp, op: opEq, at: i, text: "=="})
			i += 2
		case strings.HasPrefix(s[i:], "!="):
			p.toks = append(p.toks, token{kind: tokOp, op: opNotEq, at: i, text: "!="})
			i += 2
		case strings.HasPrefix(s[i:], "&&"):
			p.toks = append(p.toks, token{kind: tokAnd, at: i, text: "&&"})
			i += 2
		case strings.HasPrefix(s[i:], "||"):
			p.toks = append(p.toks, token{kind: tokOr, at: i, text: "||"})
			i += 2
		case c == '"':
			j, err := stringEnd(s, i)
			if err != nil {
				return err
			}
			var v string
			if err := json.Unmarshal([]byte(s[i:j]), &v); err != nil {
				return p.errorf("bad string at %d", i)
			}
			p.toks = append(p.toks, token{kind: tokString, at: i, text: v})
			i = j
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			w := s[i:j]
			if t, ok := words[w]; ok {
				t.at, t.text = i, w
				p.toks = append(p.toks, t)
			} else {
				p.toks = append(p.toks, token{kind: tokField, at: i, text: w})
			}
			i = j
		default:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return p.errorf("unexpected character %q at %d", r, i)
		}
	}
	return nil
}

// field parses a field name: key, or data followed by one or more .names.
func (p *parser) field(w string, at int) ([]string, error) {
	if w == "key" {
		return nil, nil
	}
	segs := strings.Split(w, ".")
	if segs[0] != "data" || len(segs) < 2 {
		return nil, p.errorf("unknown field %q at %d: expected key or data.<path>", w, at)
	}
	for _, seg := range segs[1:] {
		if seg == "" {
			return nil, p.errorf("empty path segment in field %q at %d", w, at)
		}
	}
	return segs[1:], nil
}

// stringEnd returns the offset after the string literal starting at i.
func stringEnd(s string, i int) (int, error) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, chorus.Errorf(chorus.ErrInvalidQuery, "Invalid query: unterminated string at %d", i)
}

func (p *parser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

func (p *parser) expectMore(what string) error {
	return p.errorf("expected %s at the end of the expression", what)
}

// parseOr: and ( OR and )*. depth bounds recursion (parentheses).
func (p *parser) parseOr(depth int) (*node, error) {
	return p.parseChain(depth, tokOr, nodeOr, p.parseAnd)
}

// parseAnd: primary ( AND primary )*; AND binds tighter than OR.
func (p *parser) parseAnd(depth int) (*node, error) {
	return p.parseChain(depth, tokAnd, nodeAnd, p.parsePrimary)
}

// parseChain parses operand ( op operand )* into one node of kind, or the
// lone operand when there is no op.
func (p *parser) parseChain(depth int, op tokKind, kind nodeKind, operand func(int) (*node, error)) (*node, error) {
	first, err := operand(depth)
	if err != nil {
		return nil, err
	}
	n := &node{kind: kind, children: []*node{first}}
	for t := p.peek(); t != nil && t.kind == op; t = p.peek() {
		p.pos++
		c, err := operand(depth)
		if err != nil {
			return nil, err
		}
		n.children = append(n.children, c)
	}
	if len(n.children) == 1 {
		return first, nil
	}
	return n, nil
}

// maxDepth bounds nested parentheses; fewer than MaxOperators operators
// need far fewer, but "((((…" has no operators at all.
const maxDepth = 64

func (p *parser) parsePrimary(depth int) (*node, error) {
	t := p.peek()
	if t == nil {
		return nil, p.expectMore("a field or (")
	}
	switch t.kind {
	case tokLParen:
		if depth >= maxDepth {
			return nil, p.errorf("parentheses nested deeper than %d", maxDepth)
		}
		p.pos++
		n, err := p.parseOr(depth + 1)
		if err != nil {
			return nil, err
		}
		c := p.peek()
		if c == nil {
			return nil, p.expectMore(")")
		}
		if c.kind != tokRParen {
			return nil, p.errorf("expected ) but found %s", c.describe())
		}
		p.pos++
		return n, nil
	case tokField:
		path, err := p.field(t.text, t.at)
		if err != nil {
			return nil, err
		}
		p.pos++
		o := p.peek()
		if o == nil {
			return nil, p.expectMore("an operator")
		}
		if o.kind != tokOp {
			return nil, p.errorf("expected an operator after %s but found %s", t.text, o.describe())
		}
		p.pos++
		n := &node{kind: nodeCmp, path: path, op: o.op}
		v := p.peek()
		if v == nil {
			return nil, p.expectMore("a value")
		}
		if o.op == opIn || o.op == opNotIn {
			vals, err := p.parseArray(o.text)
			if err != nil {
				return nil, err
			}
			n.values = vals
			return n, nil
		}
		if v.kind != tokString {
			return nil, p.errorf("expected a double-quoted string after %s but found %s", o.text, v.describe())
		}
		p.pos++
		n.values = []string{v.text}
		return n, nil
	}
	return nil, p.errorf("expected a field or ( but found %s", t.describe())
}

// parseArray: [ "a", "b", … ].
func (p *parser) parseArray(opText string) ([]string, error) {
	t := p.peek()
	if t.kind != tokLBrack {
		return nil, p.errorf("expected an array [\"…\", …] after %s but found %s", opText, t.describe())
	}
	p.pos++
	vals := []string{}
	for {
		v := p.peek()
		if v == nil {
			return nil, p.expectMore("]")
		}
		if v.kind == tokRBrack && len(vals) == 0 {
			p.pos++
			return vals, nil
		}
		if v.kind != tokString {
			return nil, p.errorf("expected a double-quoted string in the array but found %s", v.describe())
		}
		p.pos++
		vals = append(vals, v.text)
		if len(vals) >= MaxArrayItems {
			return nil, chorus.Errorf(chorus.ErrQueryArrayItems, "Query expression contains an array with too many items: the limit is fewer than %d", MaxArrayItems)
		}
		sep := p.peek()
		if sep == nil {
			return nil, p.expectMore("]")
		}
		p.pos++
		switch sep.kind {
		case tokComma:
		case tokRBrack:
			return vals, nil
		default:
			return nil, p.errorf("expected , or ] in the array but found %s", sep.describe())
		}
	}
}
