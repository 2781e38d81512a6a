package openstack

import (
	"crypto/subtle"
	"net/http"
	"time"
)

// keystoneVersion is the Identity API version the simulator reports.
const keystoneVersion = "v3.14"

func (c *Cloud) routeKeystone(mux *http.ServeMux) {
	versions := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": map[string]any{"values": []any{c.keystoneVersionDoc()}}})
	}
	mux.HandleFunc("GET /identity/{$}", versions)
	mux.HandleFunc("GET /identity", versions)
	mux.HandleFunc("GET /identity/v3/{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"version": c.keystoneVersionDoc()})
	})
	mux.HandleFunc("GET /identity/v3", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"version": c.keystoneVersionDoc()})
	})
	mux.HandleFunc("POST /identity/v3/auth/tokens", c.issueToken)
	mux.HandleFunc("GET /identity/v3/auth/tokens", c.authed(keystone, func(w http.ResponseWriter, r *http.Request) *apiError {
		sub := r.Header.Get("X-Subject-Token")
		if !c.validToken(sub) {
			return errorf(http.StatusNotFound, "Could not find token: %s.", sub)
		}
		c.mu.Lock()
		exp := c.tokens[sub]
		c.mu.Unlock()
		w.Header().Set("X-Subject-Token", sub)
		writeJSON(w, http.StatusOK, map[string]any{"token": c.tokenBody([]string{"password"}, exp)})
		return nil
	}))
	mux.HandleFunc("DELETE /identity/v3/auth/tokens", c.authed(keystone, func(w http.ResponseWriter, r *http.Request) *apiError {
		c.mu.Lock()
		delete(c.tokens, r.Header.Get("X-Subject-Token"))
		c.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.HandleFunc("/identity/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, keystone, http.StatusNotFound, "The resource could not be found.", "")
	})
}

func (c *Cloud) keystoneVersionDoc() map[string]any {
	return map[string]any{
		"id": keystoneVersion, "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links":       []any{map[string]any{"rel": "self", "href": c.baseURL + "/identity/v3/"}},
		"media-types": []any{map[string]any{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
	}
}

// authRequest is the body of POST /v3/auth/tokens.
type authRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User struct {
					ID       string `json:"id"`
					Name     string `json:"name"`
					Password string `json:"password"`
					Domain   *ref   `json:"domain"`
				} `json:"user"`
			} `json:"password"`
			ApplicationCredential *struct {
				ID     string `json:"id"`
				Name   string `json:"name"`
				Secret string `json:"secret"`
			} `json:"application_credential"`
			Token *struct {
				ID string `json:"id"`
			} `json:"token"`
		} `json:"identity"`
		Scope *struct {
			Project *struct {
				ID     string `json:"id"`
				Name   string `json:"name"`
				Domain *ref   `json:"domain"`
			} `json:"project"`
		} `json:"scope"`
	} `json:"auth"`
}

// ref names a Keystone object by id or name.
type ref struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (c *Cloud) domainMatches(d *ref) bool {
	return d != nil && (d.ID == c.domainID || (d.ID == "" && d.Name == c.cfg.DomainName))
}

func (c *Cloud) issueToken(w http.ResponseWriter, r *http.Request) {
	var req authRequest
	if err := decodeBody(r, &req); err != nil {
		writeAPIError(w, keystone, err, "")
		return
	}
	unauthorized := func() {
		writeError(w, keystone, http.StatusUnauthorized, "The request you have made requires authentication.", "")
	}
	id := req.Auth.Identity
	ok := false
	methods := id.Methods
	for _, m := range id.Methods {
		switch {
		case m == "password" && id.Password != nil:
			u := id.Password.User
			userOK := u.ID == c.userID || (u.ID == "" && u.Name == c.cfg.UserName && c.domainMatches(u.Domain))
			ok = userOK && subtle.ConstantTimeCompare([]byte(u.Password), []byte(c.cfg.Password)) == 1
		case m == "application_credential" && id.ApplicationCredential != nil && c.cfg.ApplicationCredentialID != "":
			a := id.ApplicationCredential
			ok = a.ID == c.cfg.ApplicationCredentialID &&
				subtle.ConstantTimeCompare([]byte(a.Secret), []byte(c.cfg.ApplicationCredentialSecret)) == 1
		case m == "token" && id.Token != nil:
			ok = c.validToken(id.Token.ID)
		}
	}
	if !ok {
		unauthorized()
		return
	}
	// An application credential is scoped already; a password needs the
	// project.
	if !contains(methods, "application_credential") {
		s := req.Auth.Scope
		if s == nil || s.Project == nil {
			writeError(w, keystone, http.StatusUnauthorized, "The request you have made requires authentication: an unscoped token has no service catalog here; scope it to a project.", "")
			return
		}
		p := s.Project
		if !(p.ID == c.projectID || (p.ID == "" && p.Name == c.cfg.ProjectName && c.domainMatches(p.Domain))) {
			unauthorized()
			return
		}
	}
	tok := "gAAAAA" + randomHex(32)
	exp := time.Now().Add(c.cfg.TokenTTL)
	c.mu.Lock()
	now := time.Now()
	for t, e := range c.tokens {
		if now.After(e) {
			delete(c.tokens, t) // expired tokens are forgotten
		}
	}
	c.tokens[tok] = exp
	c.mu.Unlock()
	w.Header().Set("X-Subject-Token", tok)
	writeJSON(w, http.StatusCreated, map[string]any{"token": c.tokenBody(methods, exp)})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *Cloud) validToken(tok string) bool {
	if tok == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.tokens[tok]
	return ok && time.Now().Before(exp)
}

// tokenBody is a project-scoped token with the service catalog.
func (c *Cloud) tokenBody(methods []string, exp time.Time) map[string]any {
	domain := map[string]any{"id": c.domainID, "name": c.cfg.DomainName}
	entry := func(typ, name, path string) map[string]any {
		var eps []any
		for _, iface := range []string{"public", "internal", "admin"} {
			eps = append(eps, map[string]any{
				"id": stableID("endpoint", typ+"/"+iface), "interface": iface,
				"region": c.cfg.Region, "region_id": c.cfg.Region, "url": c.baseURL + path,
			})
		}
		return map[string]any{"id": stableID("service", typ), "type": typ, "name": name, "endpoints": eps}
	}
	catalog := []any{
		entry("identity", "keystone", "/identity"),
		entry("compute", "nova", "/compute/v2.1"),
		entry("network", "neutron", "/network"),
		entry("block-storage", "cinder", "/volume/v3/"+c.projectID),
		entry("volumev3", "cinderv3", "/volume/v3/"+c.projectID),
		entry("image", "glance", "/image"),
	}
	return map[string]any{
		"methods":    methods,
		"expires_at": exp.UTC().Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		"audit_ids":  []string{randomHex(8)},
		"user":       map[string]any{"id": c.userID, "name": c.cfg.UserName, "domain": domain, "password_expires_at": nil},
		"project":    map[string]any{"id": c.projectID, "name": c.cfg.ProjectName, "domain": domain},
		"roles":      []any{map[string]any{"id": stableID("role", "member"), "name": "member"}, map[string]any{"id": stableID("role", "reader"), "name": "reader"}},
		"catalog":    catalog,
		"is_domain":  false,
	}
}
