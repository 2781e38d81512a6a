package azure

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// object is one resource, kept as the JSON document a GET answers.
type object struct {
	id    string
	typ   string // canonical, e.g. "Microsoft.Compute/virtualMachines"
	group string
	name  string
	doc   map[string]any
	// secret holds what a GET never answers (a VM's custom data) or only
	// on request (user data).
	secret map[string]string
	etag   int
}

// Resource types the server knows, by lower-cased name.
var types = map[string]string{}

func init() {
	for _, t := range []string{
		"Microsoft.Compute/virtualMachines", "Microsoft.Compute/disks", "Microsoft.Compute/snapshots", "Microsoft.Compute/images",
		"Microsoft.Network/networkInterfaces", "Microsoft.Network/publicIPAddresses", "Microsoft.Network/virtualNetworks",
		"Microsoft.Network/networkSecurityGroups", "Microsoft.Network/loadBalancers", "Microsoft.Resources/tags",
	} {
		types[strings.ToLower(t)] = t
	}
}

func canonType(lower string) string {
	if t, ok := types[lower]; ok {
		return t
	}
	return lower
}

func (s *Server) idOf(group, typ, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/%s/%s", s.cfg.SubscriptionID, group, typ, name)
}

func key(id string) string { return strings.ToLower(id) }

// get returns the object with the id (any case). Caller holds s.mu.
func (s *Server) get(id string) *object { return s.objs[key(id)] }

// put stores a new object. Caller holds s.mu.
func (s *Server) put(group, typ, name string, doc map[string]any) *object {
	o := &object{id: s.idOf(group, typ, name), typ: typ, group: group, name: name, doc: doc, etag: 1}
	doc["id"], doc["name"], doc["type"] = o.id, name, typ
	s.objs[key(o.id)] = o
	return o
}

// view is the document a GET answers.
func (o *object) view() map[string]any {
	out := clone(o.doc)
	out["etag"] = fmt.Sprintf("W/\"%d\"", o.etag)
	if o.typ == "Microsoft.Compute/virtualMachines" {
		out["etag"] = fmt.Sprintf("\"%d\"", o.etag)
	}
	return out
}

// seed makes what Config says exists.
func (s *Server) seed() error {
	addGroup := func(name string) {
		if _, ok := s.groups[strings.ToLower(name)]; !ok {
			s.groups[strings.ToLower(name)] = &group{name: name, location: s.cfg.Location, tags: map[string]string{}}
		}
	}
	for _, g := range s.cfg.ResourceGroups {
		addGroup(g)
	}
	for _, v := range s.cfg.VirtualNetworks {
		addGroup(v.ResourceGroup)
		if _, err := netip.ParsePrefix(v.AddressPrefix); err != nil {
			return fmt.Errorf("azure sim: virtual network %s: %w", v.Name, err)
		}
		vid := s.idOf(v.ResourceGroup, "Microsoft.Network/virtualNetworks", v.Name)
		var subnets []any
		for _, sn := range v.Subnets {
			if _, err := netip.ParsePrefix(sn.AddressPrefix); err != nil {
				return fmt.Errorf("azure sim: subnet %s/%s: %w", v.Name, sn.Name, err)
			}
			subnets = append(subnets, map[string]any{
				"id": vid + "/subnets/" + sn.Name, "name": sn.Name, "type": "Microsoft.Network/virtualNetworks/subnets",
				"properties": map[string]any{"addressPrefix": sn.AddressPrefix, "provisioningState": "Succeeded"},
			})
		}
		s.put(v.ResourceGroup, "Microsoft.Network/virtualNetworks", v.Name, map[string]any{
			"location": s.cfg.Location,
			"properties": map[string]any{
				"addressSpace": map[string]any{"addressPrefixes": []any{v.AddressPrefix}}, "subnets": subnets, "provisioningState": "Succeeded",
			},
		})
	}
	for _, g := range s.cfg.SecurityGroups {
		addGroup(g.ResourceGroup)
		s.put(g.ResourceGroup, "Microsoft.Network/networkSecurityGroups", g.Name, map[string]any{
			"location": s.cfg.Location, "properties": map[string]any{"securityRules": []any{}, "provisioningState": "Succeeded"},
		})
	}
	for _, lb := range s.cfg.LoadBalancers {
		addGroup(lb.ResourceGroup)
		id := s.idOf(lb.ResourceGroup, "Microsoft.Network/loadBalancers", lb.Name)
		var pools []any
		for _, p := range lb.Pools {
			pools = append(pools, map[string]any{"id": id + "/backendAddressPools/" + p, "name": p, "properties": map[string]any{"provisioningState": "Succeeded"}})
		}
		s.put(lb.ResourceGroup, "Microsoft.Network/loadBalancers", lb.Name, map[string]any{
			"location": s.cfg.Location, "sku": map[string]any{"name": "Standard"},
			"properties": map[string]any{"backendAddressPools": pools, "provisioningState": "Succeeded"},
		})
	}
	for _, p := range s.cfg.PublicIPs {
		addGroup(p.ResourceGroup)
		if a, ok := addrOf(p.Address); !ok || !a.IsLoopback() {
			return fmt.Errorf("azure sim: public ip %s: %q is not a loopback address", p.Name, p.Address)
		}
		o := s.put(p.ResourceGroup, typePIP, p.Name, map[string]any{
			"location": s.cfg.Location, "sku": map[string]any{"name": "Standard", "tier": "Regional"},
			"properties": map[string]any{"ipAddress": p.Address, "publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4", "provisioningState": "Succeeded"},
		})
		s.pubIPs[p.Address] = o.id
	}
	for _, im := range s.cfg.Images {
		if len(strings.Split(im, ":")) != 4 {
			return fmt.Errorf("azure sim: image %q is not publisher:offer:sku:version", im)
		}
	}
	return nil
}

func (g *group) view(s *Server) map[string]any {
	doc := map[string]any{
		"id": "/subscriptions/" + s.cfg.SubscriptionID + "/resourceGroups/" + g.name, "name": g.name, "type": "Microsoft.Resources/resourceGroups",
		"location": g.location, "properties": map[string]any{"provisioningState": "Succeeded"},
	}
	if len(g.tags) > 0 {
		doc["tags"] = g.tags
	}
	return doc
}

func (s *Server) listGroups(q *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []map[string]any
	for _, g := range s.groups {
		items = append(items, g.view(s))
	}
	s.page(q, items)
}

// resourceGroup answers GET, HEAD, PUT and DELETE of a resource group.
func (s *Server) resourceGroup(q *request, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[strings.ToLower(name)]
	switch q.r.Method {
	case http.MethodHead:
		if g == nil {
			q.w.WriteHeader(http.StatusNotFound)
			return
		}
		q.w.WriteHeader(http.StatusNoContent)
	case http.MethodGet:
		if g == nil {
			writeError(q.w, groupNotFound(name))
			return
		}
		writeJSON(q.w, http.StatusOK, g.view(s))
	case http.MethodPut:
		loc, _ := q.body["location"].(string)
		if loc == "" {
			writeError(q.w, errf(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition."))
			return
		}
		if g != nil {
			if !strings.EqualFold(g.location, loc) {
				writeError(q.w, errf(http.StatusConflict, "InvalidResourceGroupLocation", "Invalid resource group location '%s'. The Resource group already exists in location '%s'.", loc, g.location))
				return
			}
			writeJSON(q.w, http.StatusOK, g.view(s))
			return
		}
		if !strings.EqualFold(loc, s.cfg.Location) {
			writeError(q.w, errf(http.StatusBadRequest, "LocationNotAvailableForResourceGroup", "The provided location '%s' is not available for resource group. List of available regions is '%s'.", loc, s.cfg.Location))
			return
		}
		g = &group{name: name, location: s.cfg.Location, tags: stringMap(q.body["tags"])}
		s.groups[strings.ToLower(name)] = g
		writeJSON(q.w, http.StatusCreated, g.view(s))
	case http.MethodDelete:
		if g == nil {
			writeError(q.w, groupNotFound(name))
			return
		}
		for k, o := range s.objs {
			if strings.EqualFold(o.group, name) {
				delete(s.objs, k)
			}
		}
		delete(s.groups, strings.ToLower(name))
		op := s.begin(q, nil, nil)
		op.status = statusSucceeded
		s.asyncHeaders(q.w, op, "", true)
		q.w.WriteHeader(http.StatusAccepted)
	default:
		writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "The method %s is not allowed.", q.r.Method))
	}
}

// groupTags answers the Tags API at a resource group's scope.
func (s *Server) groupTags(q *request, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[strings.ToLower(name)]
	if g == nil {
		writeError(q.w, groupNotFound(name))
		return
	}
	switch q.r.Method {
	case http.MethodGet:
	case http.MethodPut, http.MethodPatch:
		props, _ := q.body["properties"].(map[string]any)
		tags := stringMap(props["tags"])
		op, _ := q.body["operation"].(string)
		if q.r.Method == http.MethodPut {
			op = "Replace"
		}
		switch op {
		case "Replace":
			g.tags = tags
		case "Merge":
			for k, v := range tags {
				g.tags[k] = v
			}
		case "Delete":
			for k, v := range tags {
				if g.tags[k] == v {
					delete(g.tags, k)
				}
			}
		default:
			writeError(q.w, errf(http.StatusBadRequest, "InvalidRequestContent", "The tags operation '%s' is not Replace, Merge or Delete.", op))
			return
		}
		if len(g.tags) > 50 {
			writeError(q.w, errf(http.StatusBadRequest, "InvalidTagCount", "The number of tags on resource group '%s' exceeds the maximum of 50.", g.name))
			return
		}
	default:
		writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "The method %s is not allowed.", q.r.Method))
		return
	}
	scope := "/subscriptions/" + s.cfg.SubscriptionID + "/resourceGroups/" + g.name
	writeJSON(q.w, http.StatusOK, map[string]any{
		"id": scope + "/providers/Microsoft.Resources/tags/default", "name": "default", "type": "Microsoft.Resources/tags",
		"properties": map[string]any{"tags": g.tags},
	})
}

// kind is how one resource type is created, changed, deleted and acted
// on. Every method runs with s.mu held.
type kind struct {
	put    func(s *Server, q *request, group, name string, existing *object)
	patch  func(s *Server, q *request, o *object)
	delete func(s *Server, q *request, o *object)
	action map[string]func(s *Server, q *request, o *object)
	// readOnly types answer 405 to every change.
	readOnly bool
}

var kinds map[string]*kind

// resource answers requests on /resourceGroups/{g}/providers/{ns}/{type}...
func (s *Server) resource(q *request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	groupName := q.seg[1]
	typ := canonType(q.low[3] + "/" + q.low[4])
	k := kinds[typ]
	if k == nil {
		writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceType", "The resource type '%s' could not be found in the namespace '%s'.", q.seg[4], q.seg[3]))
		return
	}
	g := s.groups[strings.ToLower(groupName)]
	if g == nil {
		writeError(q.w, groupNotFound(groupName))
		return
	}
	groupName = g.name
	if len(q.low) == 5 {
		if q.r.Method != http.MethodGet {
			writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "The method %s is not allowed.", q.r.Method))
			return
		}
		s.listLocked(q, groupName, typ)
		return
	}
	name := q.seg[5]
	o := s.get(s.idOf(groupName, typ, name))
	switch {
	case len(q.low) == 6:
	case len(q.low) == 7 && q.r.Method == http.MethodPost:
		act := k.action[q.low[6]]
		if act == nil {
			writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceType", "The action '%s' is not known for '%s'.", q.seg[6], typ))
			return
		}
		if o == nil {
			writeError(q.w, notFound(typ, groupName, name))
			return
		}
		act(s, q, o)
		return
	case len(q.low) == 8 && q.r.Method == http.MethodGet:
		s.child(q, o, typ, groupName, name)
		return
	default:
		writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceType", "The resource path '%s' is not known.", q.r.URL.Path))
		return
	}
	switch q.r.Method {
	case http.MethodGet:
		if o == nil {
			writeError(q.w, notFound(typ, groupName, name))
			return
		}
		v := o.view()
		if q.r.URL.Query().Get("$expand") == "userData" && o.secret["userData"] != "" {
			props, _ := v["properties"].(map[string]any)
			props["userData"] = o.secret["userData"]
		}
		writeJSON(q.w, http.StatusOK, v)
		return
	case http.MethodPut, http.MethodPatch, http.MethodDelete:
		if k.readOnly {
			writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "The simulator serves %s read only.", typ))
			return
		}
	}
	if o != nil && q.r.Header.Get("If-Match") != "" && q.r.Header.Get("If-Match") != "*" && q.r.Header.Get("If-Match") != o.view()["etag"] {
		writeError(q.w, errf(http.StatusPreconditionFailed, "PreconditionFailed", "The resource '%s' has changed since it was read (etag %s, If-Match %s).", name, o.view()["etag"], q.r.Header.Get("If-Match")))
		return
	}
	switch q.r.Method {
	case http.MethodPut:
		if o != nil && q.r.Header.Get("If-None-Match") == "*" {
			writeError(q.w, errf(http.StatusPreconditionFailed, "PreconditionFailed", "The resource '%s' already exists (If-None-Match: *).", name))
			return
		}
		if loc, _ := q.body["location"].(string); !strings.EqualFold(strings.ReplaceAll(loc, " ", ""), s.cfg.Location) {
			if loc == "" {
				writeError(q.w, errf(http.StatusBadRequest, "LocationRequired", "The location property is required for this definition."))
			} else {
				writeError(q.w, errf(http.StatusBadRequest, "LocationNotAvailableForResourceType", "The provided location '%s' is not available for resource type '%s'. List of available regions for the resource type is '%s'.", loc, typ, s.cfg.Location))
			}
			return
		}
		k.put(s, q, groupName, name, o)
	case http.MethodPatch:
		if o == nil {
			writeError(q.w, notFound(typ, groupName, name))
			return
		}
		if k.patch == nil {
			writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "PATCH is not supported for %s.", typ))
			return
		}
		k.patch(s, q, o)
	case http.MethodDelete:
		if o == nil {
			q.w.WriteHeader(http.StatusNoContent)
			return
		}
		k.delete(s, q, o)
	default:
		writeError(q.w, errf(http.StatusMethodNotAllowed, "MethodNotAllowed", "The method %s is not allowed.", q.r.Method))
	}
}

// child answers GET of a subnet or a backend pool.
func (s *Server) child(q *request, o *object, typ, group, name string) {
	if o == nil {
		writeError(q.w, notFound(typ, group, name))
		return
	}
	field := map[string]string{"subnets": "subnets", "backendaddresspools": "backendAddressPools"}[q.low[6]]
	props, _ := o.doc["properties"].(map[string]any)
	items, _ := props[field].([]any)
	for _, it := range items {
		m := it.(map[string]any)
		if strings.EqualFold(m["name"].(string), q.seg[7]) {
			writeJSON(q.w, http.StatusOK, clone(m))
			return
		}
	}
	writeError(q.w, notFound(typ+"/"+q.seg[6], group, name+"/"+q.seg[7]))
}

// list answers a list of a type's resources in a group or, for group "",
// the subscription.
func (s *Server) list(q *request, group, typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listLocked(q, group, typ)
}

func (s *Server) listLocked(q *request, group, typ string) {
	var items []map[string]any
	for _, o := range s.objs {
		if strings.EqualFold(o.typ, typ) && (group == "" || strings.EqualFold(o.group, group)) {
			items = append(items, o.view())
		}
	}
	slices.SortFunc(items, func(a, b map[string]any) int { return strings.Compare(key(a["id"].(string)), key(b["id"].(string))) })
	s.page(q, items)
}

// page answers one page of items, with a nextLink to the next.
func (s *Server) page(q *request, items []map[string]any) {
	skip, _ := strconv.Atoi(q.r.URL.Query().Get("$skiptoken"))
	if skip < 0 || skip > len(items) {
		skip = len(items)
	}
	end := min(skip+s.cfg.PageSize, len(items))
	doc := map[string]any{"value": append([]map[string]any{}, items[skip:end]...)}
	if end < len(items) {
		u := *q.r.URL
		v := u.Query()
		v.Set("$skiptoken", strconv.Itoa(end))
		u.RawQuery = v.Encode()
		doc["nextLink"] = s.url + u.RequestURI()
	}
	writeJSON(q.w, http.StatusOK, doc)
}

// marketplace answers the VM image catalog: a version, or the versions of
// a publisher's offer's sku.
func (s *Server) marketplace(q *request) {
	// providers/Microsoft.Compute/locations/{loc}/publishers/{p}/artifacttypes/vmimage/offers/{o}/skus/{s}/versions[/{v}]
	l := q.low
	if len(l) < 13 || len(l) > 14 || l[6] != "artifacttypes" || l[7] != "vmimage" || l[8] != "offers" || l[10] != "skus" || l[12] != "versions" {
		writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceType", "The resource path '%s' is not known.", q.r.URL.Path))
		return
	}
	pub, offer, sku := q.seg[5], q.seg[9], q.seg[11]
	base := "/Subscriptions/" + s.cfg.SubscriptionID + "/Providers/Microsoft.Compute/Locations/" + s.cfg.Location + "/Publishers/" + pub + "/ArtifactTypes/VMImage/Offers/" + offer + "/Skus/" + sku + "/Versions/"
	var versions []string
	for _, im := range s.cfg.Images {
		p := strings.Split(im, ":")
		if strings.EqualFold(p[0], pub) && strings.EqualFold(p[1], offer) && strings.EqualFold(p[2], sku) {
			versions = append(versions, p[3])
		}
	}
	notFound := errf(http.StatusNotFound, "NotFound", "Artifact: VMImage was not found.")
	if !strings.EqualFold(q.seg[3], s.cfg.Location) {
		versions = nil
	}
	if len(l) == 14 {
		for _, v := range versions {
			if v == q.seg[13] {
				writeJSON(q.w, http.StatusOK, map[string]any{
					"id": base + v, "name": v, "location": s.cfg.Location,
					"properties": map[string]any{"osImage": map[string]any{"operatingSystem": "Linux"}, "hyperVGeneration": "V2", "architecture": "x64"},
				})
				return
			}
		}
		writeError(q.w, notFound)
		return
	}
	items := []map[string]any{}
	for _, v := range versions {
		items = append(items, map[string]any{"id": base + v, "name": v, "location": s.cfg.Location})
	}
	if top, err := strconv.Atoi(q.r.URL.Query().Get("$top")); err == nil && top >= 0 && top < len(items) {
		items = items[:top]
	}
	writeJSON(q.w, http.StatusOK, items)
}

// Helpers for JSON documents.

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return clone(t)
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = cloneValue(x)
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = x
		}
		return out
	}
	return v
}

// obj returns m[k] as an object, making it when missing.
func obj(m map[string]any, k string) map[string]any {
	if v, ok := m[k].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[k] = v
	return v
}

// str is the string at the path of keys ("" when missing).
func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

func list(m map[string]any, k string) []any {
	v, _ := m[k].([]any)
	return v
}

func stringMap(v any) map[string]string {
	out := map[string]string{}
	if m, ok := v.(map[string]any); ok {
		for k, x := range m {
			if s, ok := x.(string); ok {
				out[k] = s
			}
		}
	}
	return out
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }
