package release

import (
	"fmt"
	"regexp"
	"strings"
)

// globToRegexp translates a package files pattern into an anchored regular
// expression over slash-separated relative paths. "*" matches within one
// path element, "?" one character of an element, "[...]" a character class,
// and a "**" element any number (zero included) of whole elements.
func globToRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	els := strings.Split(glob, "/")
	for i, el := range els {
		last := i == len(els)-1
		if el == "**" {
			if last {
				// "dir/**" selects everything below dir.
				b.WriteString(".*")
			} else {
				b.WriteString("(?:[^/]+/)*")
			}
			continue
		}
		if err := elementRegexp(&b, el); err != nil {
			return nil, err
		}
		if !last {
			b.WriteString("/")
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func elementRegexp(b *strings.Builder, el string) error {
	if el == "" {
		return fmt.Errorf("empty path element")
	}
	for i := 0; i < len(el); i++ {
		c := el[i]
		switch c {
		case '*':
			if i+1 < len(el) && el[i+1] == '*' {
				return fmt.Errorf("\"**\" must be a whole path element")
			}
			b.WriteString("[^/]*")
		case '?':
			b.WriteString("[^/]")
		case '[':
			j := strings.IndexByte(el[i+1:], ']')
			if j < 0 {
				return fmt.Errorf("unterminated character class")
			}
			class := el[i+1 : i+1+j]
			if class == "" {
				return fmt.Errorf("empty character class")
			}
			b.WriteString("[")
			if class[0] == '!' || class[0] == '^' {
				b.WriteString("^/")
				class = class[1:]
			}
			for _, r := range class {
				if r == '\\' || r == ']' || r == '[' {
					b.WriteString("\\")
				}
				b.WriteRune(r)
			}
			b.WriteString("]")
			i += j + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return nil
}
