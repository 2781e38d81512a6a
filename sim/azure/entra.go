package azure

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"time"
)

// tokenLifetime is how long an access token is valid, as Entra ID's.
const tokenLifetime = time.Hour

// entra answers the Entra ID endpoints MSAL uses for the client
// credentials grant: the tenant's OpenID configuration and the v2.0
// token endpoint.
func (s *Server) entra(w http.ResponseWriter, r *http.Request, seg, low []string) {
	tenant := seg[0]
	known := strings.EqualFold(tenant, s.cfg.TenantID)
	base := s.url + "/" + tenant
	switch {
	case r.Method == http.MethodGet && len(low) == 4 && low[1] == "v2.0" && low[2] == ".well-known" && low[3] == "openid-configuration":
		s.count("GET openid-configuration")
		if !known {
			writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002, "AADSTS90002: Tenant '"+tenant+"' not found.")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"token_endpoint":                        base + "/oauth2/v2.0/token",
			"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
			"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
			"issuer":                                base + "/v2.0",
			"jwks_uri":                              base + "/discovery/v2.0/keys",
			"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
			"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
			"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
			"tenant_region_scope":                   "EU",
		})
	case r.Method == http.MethodPost && len(low) == 4 && low[1] == "oauth2" && low[2] == "v2.0" && low[3] == "token":
		s.count("POST token")
		if !known {
			writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002, "AADSTS90002: Tenant '"+tenant+"' not found.")
			return
		}
		if err := r.ParseForm(); err != nil {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'grant_type'.")
			return
		}
		if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
			writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "AADSTS70003: The app requested an unsupported grant type '"+g+"'.")
			return
		}
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != s.cfg.ClientID {
			writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", 700016, "AADSTS700016: Application with identifier '"+id+"' was not found in the directory.")
			return
		}
		if subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.ClientSecret)) != 1 {
			writeOAuthError(w, http.StatusUnauthorized, "invalid_client", 7000215, "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
			return
		}
		if !slices.ContainsFunc(strings.Fields(r.PostForm.Get("scope")), func(sc string) bool { return strings.HasSuffix(sc, "/.default") }) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_scope", 1002012, "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.")
			return
		}
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		tok := base64.RawURLEncoding.EncodeToString(b)
		s.mu.Lock()
		for t, exp := range s.tokens {
			if time.Now().After(exp) {
				delete(s.tokens, t)
			}
		}
		s.tokens[tok] = time.Now().Add(tokenLifetime)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"token_type": "Bearer", "expires_in": int(tokenLifetime.Seconds()) - 1, "ext_expires_in": int(tokenLifetime.Seconds()) - 1,
			"access_token": tok,
		})
	default:
		writeOAuthError(w, http.StatusNotFound, "invalid_request", 900561, "AADSTS900561: The endpoint only accepts POST requests.")
	}
}

func writeOAuthError(w http.ResponseWriter, status int, code string, aadsts int, desc string) {
	writeJSON(w, status, map[string]any{
		"error": code, "error_description": desc, "error_codes": []int{aadsts},
		"timestamp": time.Now().UTC().Format("2006-01-02 15:04:05Z"), "trace_id": newID(), "correlation_id": newID(),
	})
}

// authorize checks the request's bearer token.
func (s *Server) authorize(r *http.Request) *armError {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return errf(http.StatusUnauthorized, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
	}
	s.mu.Lock()
	exp, known := s.tokens[tok]
	s.mu.Unlock()
	if !known {
		return errf(http.StatusUnauthorized, "InvalidAuthenticationToken", "The access token is invalid.")
	}
	if time.Now().After(exp) {
		return errf(http.StatusUnauthorized, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than current UTC time.")
	}
	return nil
}

func (s *Server) count(k string) {
	s.mu.Lock()
	s.calls[k]++
	s.mu.Unlock()
}
