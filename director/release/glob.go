package release

import (
	"fmt"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// glob is a package spec's files pattern over slash-separated paths relative
// to src/ or blobs/, matched with doublestar (the semantics of BOSH's
// Dir.glob patterns): "*" matches within one path element, "?" one
// character of an element, "[...]" a character class ("[!...]" negated),
// "{a,b}" alternatives, and a "**" element any number (zero included) of
// whole elements.
type glob string

// compileGlob checks a pattern: a valid doublestar pattern whose elements
// are not empty and whose "**" stands alone as an element.
func compileGlob(pattern string) (glob, error) {
	for _, el := range strings.Split(pattern, "/") {
		if el == "" {
			return "", fmt.Errorf("empty path element")
		}
		if strings.Contains(el, "**") && el != "**" {
			return "", fmt.Errorf("\"**\" must be a whole path element")
		}
	}
	if !doublestar.ValidatePattern(pattern) {
		return "", fmt.Errorf("malformed pattern (an unclosed [ or {?)")
	}
	return glob(pattern), nil
}

// Match reports whether the relative path matches.
func (g glob) Match(path string) bool {
	ok, _ := doublestar.Match(string(g), path) // the pattern was validated
	return ok
}
