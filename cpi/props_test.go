package cpi_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
)

type diskProps struct {
	Size int    `json:"size"`
	Type string `json:"type,omitempty"`
}

type vmProps struct {
	InstanceType   string            `json:"instance_type" cpi:"required"`
	EphemeralDisk  *diskProps        `json:"ephemeral_disk,omitempty"`
	SecurityGroups []string          `json:"security_groups,omitempty"`
	Tags           map[string]string `json:"tags,omitempty"`
	Disks          []diskProps       `json:"disks,omitempty"`
	Spot           bool              `json:"spot,omitempty"`
	Extra          json.RawMessage   `json:"extra,omitempty"`
	ignored        int
}

func TestDecodeCloudProperties(t *testing.T) {
	var p vmProps
	err := cpi.DecodeCloudProperties(json.RawMessage(`{"instance_type":"m5.large","ephemeral_disk":{"size":10240},
		"security_groups":["a","b"],"tags":{"k":"v"},"disks":[{"size":1}],"spot":true,"extra":{"anything":[1]}}`), &p)
	if err != nil {
		t.Fatal(err)
	}
	if p.ignored != 0 {
		t.Errorf("an unexported field was decoded: %d", p.ignored)
	}
	if p.InstanceType != "m5.large" || p.EphemeralDisk.Size != 10240 || len(p.SecurityGroups) != 2 || p.Tags["k"] != "v" || !p.Spot || p.Disks[0].Size != 1 {
		t.Errorf("decoded %+v", p)
	}
	var q struct {
		A string `json:"a"`
	}
	for _, raw := range []string{"", "null", "{}", " {} "} {
		if err := cpi.DecodeCloudProperties(json.RawMessage(raw), &q); err != nil {
			t.Errorf("%q: %v", raw, err)
		}
	}
}

func TestDecodeCloudPropertiesRefusals(t *testing.T) {
	for _, tc := range []struct {
		raw, field, msg string
	}{
		{`{"instance_type":"x","instnce":1}`, "instnce", "unknown property"},
		{`{"instance_type":"x","ephemeral_disk":{"size":1,"sise":2}}`, "ephemeral_disk.sise", "unknown property (known here: size, type)"},
		{`{"instance_type":"x","ephemeral_disk":{"size":"big"}}`, "ephemeral_disk.size", `must be an integer, not "big"`},
		{`{"instance_type":"x","ephemeral_disk":{"size":1.5}}`, "ephemeral_disk.size", "must be an integer"},
		{`{"instance_type":"x","security_groups":["a",2]}`, "security_groups[1]", "must be a string"},
		{`{"instance_type":"x","security_groups":"a"}`, "security_groups", "must be a list"},
		{`{"instance_type":"x","disks":[{"size":1},{"size":2,"iops":3}]}`, "disks[1].iops", "unknown property"},
		{`{"instance_type":"x","tags":{"a":1}}`, "tags.a", "must be a string"},
		{`{"instance_type":"x","spot":"yes"}`, "spot", "must be a boolean"},
		{`{"instance_type":"x","ignored":1}`, "ignored", "unknown property"},
		{`{}`, "instance_type", "is required"},
		{`{"instance_type":7}`, "instance_type", "must be a string"},
		{`["x"]`, "", "must be a JSON object, not a list"},
	} {
		var p vmProps
		err := cpi.DecodeCloudProperties(json.RawMessage(tc.raw), &p)
		if !errors.Is(err, cpi.ErrInvalidCloudProperties) {
			t.Errorf("%s: %v, want ErrInvalidCloudProperties", tc.raw, err)
			continue
		}
		var e *cpi.Error
		errors.As(err, &e)
		if e.Field != tc.field || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: field %q, error %q; want field %q and %q", tc.raw, e.Field, err, tc.field, tc.msg)
		}
	}
	if err := cpi.DecodeCloudProperties(nil, vmProps{}); err == nil || errors.Is(err, cpi.ErrInvalidCloudProperties) {
		t.Errorf("a non-pointer: %v, want a programming error", err)
	}
}
