package opsfile

import (
	"fmt"
	"strconv"
	"strings"
)

// tokenKind is what one segment of a path does.
type tokenKind int

const (
	keyToken    tokenKind = iota // /name: a map key
	indexToken                   // /0: a list position
	appendToken                  // /-: after the last list item
	matchToken                   // /name=web: the list item whose name is web
)

// modifiers of index and match tokens.
const (
	modNone   = ""
	modPrev   = "prev"   // the item before
	modNext   = "next"   // the item after
	modBefore = "before" // insert before (last token of a replace only)
	modAfter  = "after"  // insert after (last token of a replace only)
)

type token struct {
	kind     tokenKind
	key      string // keyToken: the key; matchToken: the field compared
	value    string // matchToken: the value compared
	index    int
	optional bool // "?": create when missing (and every later token too)
	modifier string
}

func (t token) String() string {
	var s string
	switch t.kind {
	case keyToken:
		s = escape(t.key)
	case indexToken:
		s = strconv.Itoa(t.index)
	case appendToken:
		s = "-"
	case matchToken:
		s = escape(t.key) + "=" + escape(t.value)
	}
	if t.optional {
		s += "?"
	}
	if t.modifier != "" {
		s += ":" + t.modifier
	}
	return s
}

func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

func unescape(s string) string {
	return strings.NewReplacer("~1", "/", "~0", "~").Replace(s)
}

// Pointer is a parsed ops file path such as
// /instance_groups/name=web/jobs/name=nginx/properties/port?.
type Pointer struct {
	tokens []token
}

// String writes the path back in ops file syntax.
func (p Pointer) String() string {
	if len(p.tokens) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range p.tokens {
		b.WriteByte('/')
		b.WriteString(t.String())
	}
	return b.String()
}

// ParsePointer reads a path. Segments are separated by "/" ("~1" writes a
// "/" inside a segment, "~0" a "~"):
//
//	key         a map key; must exist unless marked optional
//	key?        optional: created when missing, and so is everything after
//	3           a list index (from 0)
//	-           after the last list item (append)
//	k=v, k=v?   the one list item whose field k is v; optional creates it
//	...:prev    (index or k=v) the item before; :next the item after
//	...:before  (last segment of a replace) insert before the item;
//	...:after   insert after it
func ParsePointer(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, fmt.Errorf("path is empty: use / for the whole document")
	}
	if s[0] != '/' {
		return Pointer{}, fmt.Errorf("a path must start with /")
	}
	if s == "/" {
		return Pointer{}, nil
	}
	var p Pointer
	optional := false
	segs := strings.Split(s[1:], "/")
	for i, seg := range segs {
		t, err := parseToken(seg)
		if err != nil {
			return Pointer{}, fmt.Errorf("segment %d: %w", i+1, err)
		}
		if t.optional {
			optional = true
		}
		if optional && (t.kind == keyToken || t.kind == matchToken) {
			t.optional = true
		}
		if (t.modifier == modBefore || t.modifier == modAfter) && i != len(segs)-1 {
			return Pointer{}, fmt.Errorf(":%s may only end a path", t.modifier)
		}
		if t.kind == appendToken && i != len(segs)-1 {
			return Pointer{}, fmt.Errorf("- (append) may only end a path")
		}
		p.tokens = append(p.tokens, t)
	}
	return p, nil
}

func parseToken(seg string) (token, error) {
	var t token
	if seg == "-" {
		t.kind = appendToken
		return t, nil
	}
	// A modifier ends the segment: name=web:after, 2:prev.
	if i := strings.LastIndexByte(seg, ':'); i >= 0 {
		switch mod := seg[i+1:]; mod {
		case modPrev, modNext, modBefore, modAfter:
			t.modifier = mod
			seg = seg[:i]
		}
	}
	if strings.HasSuffix(seg, "?") {
		t.optional = true
		seg = strings.TrimSuffix(seg, "?")
	}
	if seg == "" {
		return t, fmt.Errorf("empty segment")
	}
	if k, v, ok := strings.Cut(seg, "="); ok {
		t.kind = matchToken
		t.key, t.value = unescape(k), unescape(v)
		if t.key == "" {
			return t, fmt.Errorf("%q: nothing before =", seg)
		}
		return t, nil
	}
	if n, err := strconv.Atoi(seg); err == nil && isDigits(seg) {
		if t.optional {
			return t, fmt.Errorf("%q: an index cannot be optional", seg+"?")
		}
		t.kind = indexToken
		t.index = n
		return t, nil
	}
	if t.modifier != "" {
		return t, fmt.Errorf("%q: :%s applies to an index or a k=v match, not a key", seg, t.modifier)
	}
	t.kind = keyToken
	t.key = unescape(seg)
	return t, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != "" && len(s) < 10
}
