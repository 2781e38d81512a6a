package azure

import (
	"encoding/json"
	"net/http"
	"strings"
)

// IMDS is a VM's Azure Instance Metadata Service, answering from the VM's
// current state as Azure's does:
//
//   - every request needs the header Metadata: true and an api-version,
//     and must not come through a proxy (X-Forwarded-For), else 400;
//   - GET /metadata/instance answers {compute, network}; with format=text
//     a leaf such as /metadata/instance/compute/userData answers the bare
//     value (user data stays base64, as Azure serves it);
//   - a VM that is gone answers 404.
type IMDS struct {
	srv *Server
	id  string
}

func (m *IMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bad := func(msg string) {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": msg})
	}
	switch {
	case r.Method != http.MethodGet:
		w.Header().Set("Allow", "GET")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "Method not allowed"})
		return
	case r.Header.Get("Metadata") != "true":
		bad("Bad request. Required metadata header not specified")
		return
	case r.Header.Get("X-Forwarded-For") != "":
		bad("Bad request. X-Forwarded-For header is not allowed")
		return
	case r.URL.Query().Get("api-version") == "":
		bad("Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds")
		return
	}
	doc, ok := m.document()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "Not found"})
		return
	}
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/metadata/instance"), "/")
	if !strings.HasPrefix(r.URL.Path, "/metadata/instance") {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "Not found"})
		return
	}
	var cur any = doc
	for _, p := range strings.Split(path, "/") {
		if p == "" {
			continue
		}
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				writeJSON(w, http.StatusNotFound, map[string]any{"error": "Not found"})
				return
			}
			cur = v
		default:
			writeJSON(w, http.StatusNotFound, map[string]any{"error": "Not found"})
			return
		}
	}
	if r.URL.Query().Get("format") == "text" {
		s, ok := cur.(string)
		if !ok {
			bad("Bad request. format=text is only for leaf values")
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(s))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(cur)
}

// document is the VM's instance metadata.
func (m *IMDS) document() (map[string]any, bool) {
	s := m.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	vm := s.get(m.id)
	if vm == nil {
		return nil, false
	}
	info := s.vmInfo(vm)
	props := obj(vm.doc, "properties")
	var ifaces []any
	for _, n := range list(obj(props, "networkProfile"), "networkInterfaces") {
		nic := s.get(str(n.(map[string]any), "id"))
		if nic == nil {
			continue
		}
		var addrs []any
		for _, c := range list(obj(nic.doc, "properties"), "ipConfigurations") {
			cm := c.(map[string]any)
			pub := ""
			if pip := s.get(str(cm, "properties", "publicIPAddress", "id")); pip != nil {
				pub = str(pip.doc, "properties", "ipAddress")
			}
			addrs = append(addrs, map[string]any{"privateIpAddress": str(cm, "properties", "privateIPAddress"), "publicIpAddress": pub})
		}
		ifaces = append(ifaces, map[string]any{
			"ipv4": map[string]any{"ipAddress": addrs}, "ipv6": map[string]any{"ipAddress": []any{}},
			"macAddress": strings.ReplaceAll(str(nic.doc, "properties", "macAddress"), "-", ""),
		})
	}
	var tags []string
	for k, v := range stringMap(vm.doc["tags"]) {
		tags = append(tags, k+":"+v)
	}
	zone := ""
	if z, _ := vm.doc["zones"].([]any); len(z) > 0 {
		zone, _ = z[0].(string)
	}
	return map[string]any{
		"compute": map[string]any{
			"azEnvironment": "AzurePublicCloud", "location": s.cfg.Location, "name": vm.name, "computerName": info.ComputerName,
			"osType": "Linux", "resourceGroupName": vm.group, "resourceId": vm.id, "subscriptionId": s.cfg.SubscriptionID,
			"vmId": str(props, "vmId"), "vmSize": str(props, "hardwareProfile", "vmSize"), "zone": zone,
			"tags": strings.Join(tags, ";"), "userData": info.UserData, "customData": "",
			"provider": "Microsoft.Compute",
		},
		"network": map[string]any{"interface": ifaces},
	}, true
}

// NewIMDS is the IMDS of the VM with the ARM id.
func NewIMDS(s *Server, vmID string) *IMDS { return &IMDS{srv: s, id: vmID} }
