package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/compleat/compleat/director/config"
)

// Token is an accepted bearer token, known only by its sha256.
type Token struct {
	Name   string
	SHA256 [32]byte
	Scopes []string
}

// Auth checks bearer tokens against a fixed list.
type Auth struct{ tokens []Token }

// NewAuth returns an Auth accepting tokens.
func NewAuth(tokens []Token) *Auth { return &Auth{tokens: tokens} }

// identify returns the token presented in r, if it is one of ours. Every
// candidate is compared in constant time.
func (a *Auth) identify(r *http.Request) (Token, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Token{}, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	var found Token
	hit := 0
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], t.SHA256[:]) == 1 {
			found, hit = t, 1
		}
	}
	return found, hit == 1
}

func (t Token) has(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope || s == config.ScopeAdmin {
			return true
		}
	}
	return false
}
