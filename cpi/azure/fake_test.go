package azure_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	networkfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/v3"
	resourcesfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/v3/fake"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/azure"
	"github.com/compleat/compleat/cpi/cpitest"
)

// The conformance suite in-process over gRPC against the SDK's own fake
// servers (armcompute, armnetwork and armresources fake packages) behind a
// stateful in-memory subscription: requests go through the SDK's whole
// pipeline (URLs, JSON, pollers, pagers, typed errors) without a socket.
// The simulated Azure in sim/azure runs the same suite over HTTPS with
// long-running operations in progress, faults and booted VMs.
func TestConformanceSDKFakes(t *testing.T) {
	img := filepath.Join(t.TempDir(), "image")
	os.WriteFile(img, nil, 0o644)
	net := json.RawMessage(`{"virtual_network_name": "vnet", "subnet_name": "default"}`)
	manual := cpitest.ManualNetworks("10.0.1.10")
	cfg := cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(`{"image": {"publisher": "Canonical", "offer": "ubuntu", "sku": "server", "version": "1.0"}}`)},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "Standard_B2s", "ephemeral_disk": {"size": 1024}}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "Standard_B2s", "ephemeral_disk": {"size": "big"}}`),
		InvalidField:             "ephemeral_disk.size",
		Networks: func(int) map[string]cpi.Network {
			return map[string]cpi.Network{"default": {Type: "dynamic", Default: []string{"dns", "gateway"}, CloudProperties: net}}
		},
		ManualNetworks: func(i int) map[string]cpi.Network {
			nets := manual(i)
			n := nets["default"]
			n.CloudProperties = net
			nets["default"] = n
			return nets
		},
	}
	cloud := newFakeCloud()
	cfg.DeliveredSettings = func(_ context.Context, cid string) (json.RawMessage, error) {
		cloud.mu.Lock()
		defer cloud.mu.Unlock()
		vm, ok := cloud.vms[key(cid)]
		if !ok || vm.Properties.UserData == nil {
			return nil, fmt.Errorf("no vm %s with user data", cid)
		}
		return base64.StdEncoding.DecodeString(*vm.Properties.UserData)
	}
	props := json.RawMessage(`{"subscription_id": "sub", "tenant_id": "t", "client_id": "c", "client_secret": "s",
		"resource_group_name": "rg", "location": "westeurope", "ssh_public_key": "ssh-ed25519 AAAA", "poll_interval": "1s"}`)
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI {
		c, err := azure.New(context.Background(), props, azure.WithTransport(cloud.transport()), azure.WithCredential(&azfake.TokenCredential{}),
			azure.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}, cfg)
	cloud.mu.Lock()
	defer cloud.mu.Unlock()
	if len(cloud.vms)+len(cloud.nics)+len(cloud.disks) != 0 {
		t.Errorf("left behind: %d VMs, %d NICs, %d disks", len(cloud.vms), len(cloud.nics), len(cloud.disks))
	}
}

// fakeCloud is the subscription behind the fake servers: one resource
// group "rg", virtual network "vnet" with subnet "default" (10.0.1.0/24),
// one marketplace image.
type fakeCloud struct {
	mu        sync.Mutex
	tags      map[string]string // the resource group's
	vms       map[string]armcompute.VirtualMachine
	disks     map[string]armcompute.Disk
	snapshots map[string]armcompute.Snapshot
	nics      map[string]armnetwork.Interface
	pips      map[string]armnetwork.PublicIPAddress
	ips       map[string]bool
}

func newFakeCloud() *fakeCloud {
	return &fakeCloud{tags: map[string]string{}, vms: map[string]armcompute.VirtualMachine{}, disks: map[string]armcompute.Disk{},
		snapshots: map[string]armcompute.Snapshot{}, nics: map[string]armnetwork.Interface{}, pips: map[string]armnetwork.PublicIPAddress{}, ips: map[string]bool{}}
}

func id(group, typ, name string) string {
	return fmt.Sprintf("/subscriptions/sub/resourceGroups/%s/providers/%s/%s", group, typ, name)
}

func key(s string) string { return strings.ToLower(s) }

// transportFunc is a policy.Transporter.
type transportFunc func(*http.Request) (*http.Response, error)

func (f transportFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

// transport sends each request to the fake server of its provider.
func (c *fakeCloud) transport() transportFunc {
	compute := computefake.NewServerFactoryTransport(c.computeServers())
	network := networkfake.NewServerFactoryTransport(c.networkServers())
	resources := resourcesfake.NewServerFactoryTransport(c.resourceServers())
	return func(r *http.Request) (*http.Response, error) {
		p := strings.ToLower(r.URL.Path)
		switch {
		case strings.Contains(p, "/providers/microsoft.compute/"):
			return compute.Do(r)
		case strings.Contains(p, "/providers/microsoft.network/"):
			return network.Do(r)
		}
		return resources.Do(r)
	}
}

func notFound(e *azfake.ErrorResponder) { e.SetResponseError(http.StatusNotFound, "ResourceNotFound") }

func (c *fakeCloud) resourceServers() *resourcesfake.ServerFactory {
	return &resourcesfake.ServerFactory{
		ResourceGroupsServer: resourcesfake.ResourceGroupsServer{
			Get: func(_ context.Context, name string, _ *armresources.ResourceGroupsClientGetOptions) (resp azfake.Responder[armresources.ResourceGroupsClientGetResponse], e azfake.ErrorResponder) {
				if name != "rg" {
					e.SetResponseError(http.StatusNotFound, "ResourceGroupNotFound")
					return
				}
				resp.SetResponse(http.StatusOK, armresources.ResourceGroupsClientGetResponse{ResourceGroup: armresources.ResourceGroup{Name: to.Ptr("rg"), Location: to.Ptr("westeurope")}}, nil)
				return
			},
		},
		TagsServer: resourcesfake.TagsServer{
			GetAtScope: func(_ context.Context, scope string, _ *armresources.TagsClientGetAtScopeOptions) (resp azfake.Responder[armresources.TagsClientGetAtScopeResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				resp.SetResponse(http.StatusOK, armresources.TagsClientGetAtScopeResponse{TagsResource: armresources.TagsResource{Properties: &armresources.Tags{Tags: ptrs(c.tags)}}}, nil)
				return
			},
			BeginUpdateAtScope: func(_ context.Context, scope string, p armresources.TagsPatchResource, _ *armresources.TagsClientBeginUpdateAtScopeOptions) (resp azfake.PollerResponder[armresources.TagsClientUpdateAtScopeResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				for k, v := range p.Properties.Tags {
					switch *p.Operation {
					case armresources.TagsPatchOperationMerge:
						c.tags[k] = *v
					case armresources.TagsPatchOperationDelete:
						if c.tags[k] == *v {
							delete(c.tags, k)
						}
					}
				}
				resp.SetTerminalResponse(http.StatusOK, armresources.TagsClientUpdateAtScopeResponse{TagsResource: armresources.TagsResource{Properties: &armresources.Tags{Tags: ptrs(c.tags)}}}, nil)
				return
			},
		},
	}
}

func (c *fakeCloud) networkServers() *networkfake.ServerFactory {
	return &networkfake.ServerFactory{
		SubnetsServer: networkfake.SubnetsServer{
			Get: func(_ context.Context, group, vnet, subnet string, _ *armnetwork.SubnetsClientGetOptions) (resp azfake.Responder[armnetwork.SubnetsClientGetResponse], e azfake.ErrorResponder) {
				if group != "rg" || vnet != "vnet" || subnet != "default" {
					notFound(&e)
					return
				}
				resp.SetResponse(http.StatusOK, armnetwork.SubnetsClientGetResponse{Subnet: armnetwork.Subnet{
					ID: to.Ptr(id("rg", "Microsoft.Network/virtualNetworks", "vnet/subnets/default")), Properties: &armnetwork.SubnetPropertiesFormat{AddressPrefix: to.Ptr("10.0.1.0/24")},
				}}, nil)
				return
			},
		},
		InterfacesServer: networkfake.InterfacesServer{
			BeginCreateOrUpdate: func(_ context.Context, group, name string, nic armnetwork.Interface, _ *armnetwork.InterfacesClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armnetwork.InterfacesClientCreateOrUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				ipc := nic.Properties.IPConfigurations[0].Properties
				if *ipc.PrivateIPAllocationMethod == armnetwork.IPAllocationMethodStatic {
					if c.ips[*ipc.PrivateIPAddress] {
						e.SetResponseError(http.StatusBadRequest, "PrivateIPAddressInUse")
						return
					}
				} else {
					for i := 4; ; i++ {
						if ip := fmt.Sprintf("10.0.1.%d", i); !c.ips[ip] {
							ipc.PrivateIPAddress = to.Ptr(ip)
							break
						}
					}
				}
				c.ips[*ipc.PrivateIPAddress] = true
				nic.ID, nic.Name = to.Ptr(id(group, "Microsoft.Network/networkInterfaces", name)), to.Ptr(name)
				c.nics[key(*nic.ID)] = nic
				resp.SetTerminalResponse(http.StatusOK, armnetwork.InterfacesClientCreateOrUpdateResponse{Interface: nic}, nil)
				return
			},
			BeginDelete: func(_ context.Context, group, name string, _ *armnetwork.InterfacesClientBeginDeleteOptions) (resp azfake.PollerResponder[armnetwork.InterfacesClientDeleteResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				c.deleteNIC(id(group, "Microsoft.Network/networkInterfaces", name))
				resp.SetTerminalResponse(http.StatusOK, armnetwork.InterfacesClientDeleteResponse{}, nil)
				return
			},
		},
		PublicIPAddressesServer: networkfake.PublicIPAddressesServer{
			BeginDelete: func(_ context.Context, group, name string, _ *armnetwork.PublicIPAddressesClientBeginDeleteOptions) (resp azfake.PollerResponder[armnetwork.PublicIPAddressesClientDeleteResponse], e azfake.ErrorResponder) {
				resp.SetTerminalResponse(http.StatusOK, armnetwork.PublicIPAddressesClientDeleteResponse{}, nil)
				return
			},
		},
	}
}

func (c *fakeCloud) deleteNIC(nicID string) {
	if nic, ok := c.nics[key(nicID)]; ok {
		delete(c.ips, *nic.Properties.IPConfigurations[0].Properties.PrivateIPAddress)
		delete(c.nics, key(nicID))
	}
}

func (c *fakeCloud) computeServers() *computefake.ServerFactory {
	return &computefake.ServerFactory{
		VirtualMachineImagesServer: computefake.VirtualMachineImagesServer{
			Get: func(_ context.Context, loc, pub, offer, sku, version string, _ *armcompute.VirtualMachineImagesClientGetOptions) (resp azfake.Responder[armcompute.VirtualMachineImagesClientGetResponse], e azfake.ErrorResponder) {
				if pub != "Canonical" || version != "1.0" {
					notFound(&e)
					return
				}
				resp.SetResponse(http.StatusOK, armcompute.VirtualMachineImagesClientGetResponse{VirtualMachineImage: armcompute.VirtualMachineImage{Name: to.Ptr(version), Location: to.Ptr(loc)}}, nil)
				return
			},
		},
		VirtualMachinesServer: computefake.VirtualMachinesServer{
			Get: func(_ context.Context, group, name string, _ *armcompute.VirtualMachinesClientGetOptions) (resp azfake.Responder[armcompute.VirtualMachinesClientGetResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				vm, ok := c.vms[key(id(group, "Microsoft.Compute/virtualMachines", name))]
				if !ok {
					notFound(&e)
					return
				}
				resp.SetResponse(http.StatusOK, armcompute.VirtualMachinesClientGetResponse{VirtualMachine: vm}, nil)
				return
			},
			BeginCreateOrUpdate: func(_ context.Context, group, name string, vm armcompute.VirtualMachine, _ *armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientCreateOrUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				vm.ID, vm.Name = to.Ptr(id(group, "Microsoft.Compute/virtualMachines", name)), to.Ptr(name)
				if _, ok := c.vms[key(*vm.ID)]; ok {
					e.SetResponseError(http.StatusPreconditionFailed, "PreconditionFailed")
					return
				}
				for _, n := range vm.Properties.NetworkProfile.NetworkInterfaces {
					if _, ok := c.nics[key(*n.ID)]; !ok {
						e.SetResponseError(http.StatusBadRequest, "InvalidResourceReference")
						return
					}
				}
				for _, d := range vm.Properties.StorageProfile.DataDisks {
					d.ManagedDisk.ID = to.Ptr(id(group, "Microsoft.Compute/disks", *d.Name))
				}
				vm.Etag = to.Ptr("1")
				vm.Properties.ProvisioningState = to.Ptr("Succeeded")
				c.vms[key(*vm.ID)] = vm
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachinesClientCreateOrUpdateResponse{VirtualMachine: vm}, nil)
				return
			},
			BeginUpdate: func(_ context.Context, group, name string, u armcompute.VirtualMachineUpdate, _ *armcompute.VirtualMachinesClientBeginUpdateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				vmID := id(group, "Microsoft.Compute/virtualMachines", name)
				vm, ok := c.vms[key(vmID)]
				if !ok {
					notFound(&e)
					return
				}
				if u.Tags != nil {
					vm.Tags = u.Tags
				}
				if u.Properties != nil && u.Properties.StorageProfile != nil {
					for _, d := range u.Properties.StorageProfile.DataDisks {
						if disk, ok := c.disks[key(*d.ManagedDisk.ID)]; ok && disk.ManagedBy != nil && !strings.EqualFold(*disk.ManagedBy, vmID) {
							e.SetResponseError(http.StatusConflict, "OperationNotAllowed")
							return
						}
					}
					for _, d := range vm.Properties.StorageProfile.DataDisks {
						if disk, ok := c.disks[key(*d.ManagedDisk.ID)]; ok {
							disk.ManagedBy = nil
							c.disks[key(*d.ManagedDisk.ID)] = disk
						}
					}
					for _, d := range u.Properties.StorageProfile.DataDisks {
						if disk, ok := c.disks[key(*d.ManagedDisk.ID)]; ok {
							disk.ManagedBy = to.Ptr(vmID)
							c.disks[key(*d.ManagedDisk.ID)] = disk
						} else if *d.CreateOption == armcompute.DiskCreateOptionTypesAttach {
							e.SetResponseError(http.StatusNotFound, "NotFound")
							return
						}
					}
					vm.Properties.StorageProfile.DataDisks = u.Properties.StorageProfile.DataDisks
				}
				c.vms[key(vmID)] = vm
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachinesClientUpdateResponse{VirtualMachine: vm}, nil)
				return
			},
			BeginDelete: func(_ context.Context, group, name string, _ *armcompute.VirtualMachinesClientBeginDeleteOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientDeleteResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				vmID := key(id(group, "Microsoft.Compute/virtualMachines", name))
				if vm, ok := c.vms[vmID]; ok {
					for _, n := range vm.Properties.NetworkProfile.NetworkInterfaces {
						c.deleteNIC(*n.ID)
					}
					for _, d := range vm.Properties.StorageProfile.DataDisks {
						if disk, ok := c.disks[key(*d.ManagedDisk.ID)]; ok {
							disk.ManagedBy = nil
							c.disks[key(*d.ManagedDisk.ID)] = disk
						}
					}
					delete(c.vms, vmID)
				}
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachinesClientDeleteResponse{}, nil)
				return
			},
			BeginRestart: func(_ context.Context, group, name string, _ *armcompute.VirtualMachinesClientBeginRestartOptions) (resp azfake.PollerResponder[armcompute.VirtualMachinesClientRestartResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				if _, ok := c.vms[key(id(group, "Microsoft.Compute/virtualMachines", name))]; !ok {
					notFound(&e)
					return
				}
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachinesClientRestartResponse{}, nil)
				return
			},
			NewListAllPager: func(*armcompute.VirtualMachinesClientListAllOptions) (resp azfake.PagerResponder[armcompute.VirtualMachinesClientListAllResponse]) {
				c.mu.Lock()
				defer c.mu.Unlock()
				var vms []*armcompute.VirtualMachine
				for _, k := range slices.Sorted(maps.Keys(c.vms)) {
					vm := c.vms[k]
					vms = append(vms, &vm)
				}
				resp.AddPage(http.StatusOK, armcompute.VirtualMachinesClientListAllResponse{VirtualMachineListResult: armcompute.VirtualMachineListResult{Value: vms}}, nil)
				return
			},
		},
		DisksServer: computefake.DisksServer{
			Get: func(_ context.Context, group, name string, _ *armcompute.DisksClientGetOptions) (resp azfake.Responder[armcompute.DisksClientGetResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				d, ok := c.disks[key(id(group, "Microsoft.Compute/disks", name))]
				if !ok {
					notFound(&e)
					return
				}
				resp.SetResponse(http.StatusOK, armcompute.DisksClientGetResponse{Disk: d}, nil)
				return
			},
			BeginCreateOrUpdate: func(_ context.Context, group, name string, d armcompute.Disk, _ *armcompute.DisksClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcompute.DisksClientCreateOrUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				d.ID, d.Name = to.Ptr(id(group, "Microsoft.Compute/disks", name)), to.Ptr(name)
				c.disks[key(*d.ID)] = d
				resp.SetTerminalResponse(http.StatusOK, armcompute.DisksClientCreateOrUpdateResponse{Disk: d}, nil)
				return
			},
			BeginUpdate: func(_ context.Context, group, name string, u armcompute.DiskUpdate, _ *armcompute.DisksClientBeginUpdateOptions) (resp azfake.PollerResponder[armcompute.DisksClientUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				k := key(id(group, "Microsoft.Compute/disks", name))
				d, ok := c.disks[k]
				if !ok {
					notFound(&e)
					return
				}
				if u.Tags != nil {
					d.Tags = u.Tags
				}
				if u.Properties != nil && u.Properties.DiskSizeGB != nil {
					d.Properties.DiskSizeGB = u.Properties.DiskSizeGB
				}
				c.disks[k] = d
				resp.SetTerminalResponse(http.StatusOK, armcompute.DisksClientUpdateResponse{Disk: d}, nil)
				return
			},
			BeginDelete: func(_ context.Context, group, name string, _ *armcompute.DisksClientBeginDeleteOptions) (resp azfake.PollerResponder[armcompute.DisksClientDeleteResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				k := key(id(group, "Microsoft.Compute/disks", name))
				if d, ok := c.disks[k]; ok && d.ManagedBy != nil {
					e.SetResponseError(http.StatusConflict, "OperationNotAllowed")
					return
				}
				delete(c.disks, k)
				resp.SetTerminalResponse(http.StatusOK, armcompute.DisksClientDeleteResponse{}, nil)
				return
			},
			NewListPager: func(*armcompute.DisksClientListOptions) (resp azfake.PagerResponder[armcompute.DisksClientListResponse]) {
				c.mu.Lock()
				defer c.mu.Unlock()
				var disks []*armcompute.Disk
				for _, k := range slices.Sorted(maps.Keys(c.disks)) {
					d := c.disks[k]
					disks = append(disks, &d)
				}
				resp.AddPage(http.StatusOK, armcompute.DisksClientListResponse{DiskList: armcompute.DiskList{Value: disks}}, nil)
				return
			},
		},
		SnapshotsServer: computefake.SnapshotsServer{
			BeginCreateOrUpdate: func(_ context.Context, group, name string, s armcompute.Snapshot, _ *armcompute.SnapshotsClientBeginCreateOrUpdateOptions) (resp azfake.PollerResponder[armcompute.SnapshotsClientCreateOrUpdateResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				s.ID = to.Ptr(id(group, "Microsoft.Compute/snapshots", name))
				c.snapshots[key(*s.ID)] = s
				resp.SetTerminalResponse(http.StatusOK, armcompute.SnapshotsClientCreateOrUpdateResponse{Snapshot: s}, nil)
				return
			},
			BeginDelete: func(_ context.Context, group, name string, _ *armcompute.SnapshotsClientBeginDeleteOptions) (resp azfake.PollerResponder[armcompute.SnapshotsClientDeleteResponse], e azfake.ErrorResponder) {
				c.mu.Lock()
				defer c.mu.Unlock()
				delete(c.snapshots, key(id(group, "Microsoft.Compute/snapshots", name)))
				resp.SetTerminalResponse(http.StatusOK, armcompute.SnapshotsClientDeleteResponse{}, nil)
				return
			},
		},
	}
}

func ptrs(m map[string]string) map[string]*string {
	out := map[string]*string{}
	for k, v := range m {
		out[k] = to.Ptr(v)
	}
	return out
}
