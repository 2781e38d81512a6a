package cpi

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// DecodeCloudProperties decodes cloud properties (a JSON object; empty or
// null means {}) into the struct v points to, strictly, so that a plugin
// rejects what it cannot use instead of ignoring it:
//
//   - a key that no field of the struct names is refused;
//   - a value of the wrong type is refused;
//   - a field tagged `cpi:"required"` must be present.
//
// Every refusal is ErrInvalidCloudProperties whose Field is the dotted path
// of the offending key as the operator wrote it ("ephemeral_disk.size",
// "security_groups[1]"), so the director can point at the manifest line.
// Field names are the json tags (or the Go names without one), matched
// exactly; nested structs, pointers, slices and maps of them are checked the
// same way. A type implementing json.Unmarshaler decodes itself and is not
// looked into.
//
//	var p struct {
//		InstanceType string `json:"instance_type" cpi:"required"`
//		Disk         struct {
//			Size int `json:"size"`
//		} `json:"ephemeral_disk"`
//	}
//	if err := cpi.DecodeCloudProperties(req.CloudProperties, &p); err != nil {
//		return cpi.CreateVMResult{}, err
//	}
func DecodeCloudProperties(raw json.RawMessage, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("cpi.DecodeCloudProperties: want a non-nil pointer, got %T", v)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage(`{}`)
	}
	if raw[0] != '{' {
		return &Error{Code: CodeInvalidCloudProperties, Message: fmt.Sprintf("cloud properties must be a JSON object, not %s", jsonKind(raw))}
	}
	if err := checkValue(raw, rv.Elem().Type(), ""); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &Error{Code: CodeInvalidCloudProperties, Message: err.Error()}
	}
	return nil
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	rawMessage      = reflect.TypeFor[json.RawMessage]()
)

// checkValue checks raw against t, naming path in its refusals.
func checkValue(raw json.RawMessage, t reflect.Type, path string) error {
	if string(raw) == "null" {
		return nil
	}
	if t == rawMessage || reflect.PointerTo(t).Implements(jsonUnmarshaler) || t.Implements(jsonUnmarshaler) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkValue(raw, t.Elem(), path)
	case reflect.Interface:
		return nil
	case reflect.Struct:
		if raw[0] != '{' {
			return InvalidCloudProperty(path, "must be an object, not %s", jsonKind(raw))
		}
		return checkStruct(raw, t, path)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && raw[0] == '"' {
			break // []byte as base64
		}
		if raw[0] != '[' {
			return InvalidCloudProperty(path, "must be a list, not %s", jsonKind(raw))
		}
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return InvalidCloudProperty(path, "%v", err)
		}
		for i, item := range items {
			if err := checkValue(item, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		if raw[0] != '{' {
			return InvalidCloudProperty(path, "must be an object, not %s", jsonKind(raw))
		}
		var items map[string]json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return InvalidCloudProperty(path, "%v", err)
		}
		for _, k := range slices.Sorted(maps.Keys(items)) {
			if err := checkValue(items[k], t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
		return nil
	}
	// A leaf: let encoding/json say whether it fits.
	if t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
		if raw[0] != '"' {
			return InvalidCloudProperty(path, "must be a string, not %s", jsonKind(raw))
		}
	}
	if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
		return InvalidCloudProperty(path, "must be %s, not %s", kindName(t), raw)
	}
	return nil
}

// field is one JSON-visible field of a struct.
type field struct {
	index    []int
	typ      reflect.Type
	required bool
}

func structFields(t reflect.Type) map[string]field {
	out := map[string]field{}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(index), i)
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					walk(ft, idx)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, ok := out[name]; !ok || len(idx) < len(out[name].index) {
				out[name] = field{index: idx, typ: f.Type, required: f.Tag.Get("cpi") == "required"}
			}
		}
	}
	walk(t, nil)
	return out
}

func checkStruct(raw json.RawMessage, t reflect.Type, path string) error {
	var items map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return InvalidCloudProperty(path, "%v", err)
	}
	fields := structFields(t)
	names := slices.Sorted(maps.Keys(fields))
	for _, k := range slices.Sorted(maps.Keys(items)) {
		f, ok := fields[k]
		if !ok {
			return InvalidCloudProperty(join(path, k), "unknown property (known here: %s)", strings.Join(names, ", "))
		}
		if err := checkValue(items[k], f.typ, join(path, k)); err != nil {
			return err
		}
	}
	for _, k := range names {
		if _, ok := items[k]; !ok && fields[k].required {
			return InvalidCloudProperty(join(path, k), "is required")
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonKind(raw json.RawMessage) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string " + string(raw)
	case 't', 'f':
		return "a boolean " + string(raw)
	case 'n':
		return "null"
	default:
		return "a number " + string(raw)
	}
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	default:
		return "a " + t.String()
	}
}
