// Package tgz writes deterministic gzip-compressed tar archives and reads
// untrusted ones without letting them escape their target.
//
// [Write] sorts entries, adds parent directories, and fixes every header
// field that would vary between machines or runs (modification times,
// owners, user and group names), so the same files give byte-identical
// archives. [Walk] and [Extract] read archives from outside: every entry
// name must be a clean relative path, links may not point outside the
// archive, only regular files, directories and in-archive links are
// accepted, and the sizes and entry counts are bounded by [Limits].
package tgz

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// modTime is the modification time written for every entry.
var modTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one regular file to archive: its content comes from Data, or from
// the file at Path when Data is nil.
type File struct {
	// Name is the slash-separated path inside the archive.
	Name string
	// Mode holds the permission bits; only 0755 and 0644 are written
	// (executable or not), as git and BOSH do.
	Mode fs.FileMode
	Data []byte
	Path string
}

// Write writes files as a deterministic tar.gz to w: entries sorted by name,
// each parent directory as its own entry, mtime fixed, uid/gid 0, no user or
// group names. Names must be clean relative paths and unique.
func Write(w io.Writer, files []File) error {
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	dirs := map[string]bool{}
	names := map[string]bool{}
	for _, f := range sorted {
		if err := CheckName(f.Name); err != nil {
			return fmt.Errorf("archive entry %q: %w", f.Name, err)
		}
		if names[f.Name] {
			return fmt.Errorf("archive entry %q: duplicate name", f.Name)
		}
		names[f.Name] = true
		for d := path.Dir(f.Name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if names[d] {
			return fmt.Errorf("archive entry %q: both a file and a directory", d)
		}
	}
	type entry struct {
		name string
		dir  bool
		f    File
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{name: d, dir: true})
	}
	for _, f := range sorted {
		entries = append(entries, entry{name: f.Name, f: f})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	gz, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if e.dir {
			if err := tw.WriteHeader(header(e.name+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return fmt.Errorf("write %s: %w", e.name, err)
			}
			continue
		}
		if err := writeFile(tw, e.f); err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func header(name string, typ byte, mode int64, size int64) *tar.Header {
	return &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Size:     size,
		ModTime:  modTime,
		Format:   tar.FormatPAX,
	}
}

func writeFile(tw *tar.Writer, f File) error {
	mode := int64(0o644)
	if f.Mode&0o111 != 0 {
		mode = 0o755
	}
	if f.Data != nil || f.Path == "" {
		if err := tw.WriteHeader(header(f.Name, tar.TypeReg, mode, int64(len(f.Data)))); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
	src, err := os.Open(f.Path)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", f.Path)
	}
	if err := tw.WriteHeader(header(f.Name, tar.TypeReg, mode, st.Size())); err != nil {
		return err
	}
	n, err := io.Copy(tw, src)
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s changed size while being archived", f.Path)
	}
	return nil
}

// Bytes is Write into memory.
func Bytes(files []File) ([]byte, error) {
	var b bytes.Buffer
	if err := Write(&b, files); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Limits bound what a reader accepts from an untrusted archive. A zero
// field takes DefaultLimits' value.
type Limits struct {
	// MaxEntries is the largest number of entries.
	MaxEntries int
	// MaxFileSize is the largest size of one file.
	MaxFileSize int64
	// MaxTotalSize is the largest number of bytes after decompression,
	// headers included.
	MaxTotalSize int64
}

// DefaultLimits suit a release or stemcell archive on a director.
var DefaultLimits = Limits{MaxEntries: 100000, MaxFileSize: 8 << 30, MaxTotalSize: 16 << 30}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultLimits.MaxFileSize
	}
	if l.MaxTotalSize <= 0 {
		l.MaxTotalSize = DefaultLimits.MaxTotalSize
	}
	return l
}

// Errors returned by readers, wrapped with the offending entry's name.
var (
	ErrUnsafePath   = errors.New("path escapes the archive")
	ErrLinkEscape   = errors.New("link points outside the archive")
	ErrEntryType    = errors.New("entry type not allowed")
	ErrDuplicate    = errors.New("duplicate entry")
	ErrTooLarge     = errors.New("archive exceeds size limits")
	ErrTooManyFiles = errors.New("archive has too many entries")
)

// CheckName accepts a clean relative slash path: not empty, not absolute,
// no "." or ".." or empty elements, no backslash or NUL.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name: %w", ErrUnsafePath)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("absolute path: %w", ErrUnsafePath)
	case strings.ContainsAny(name, "\\\x00"):
		return fmt.Errorf("backslash or NUL in name: %w", ErrUnsafePath)
	}
	for _, el := range strings.Split(name, "/") {
		switch el {
		case "..":
			return fmt.Errorf("\"..\" in path: %w", ErrUnsafePath)
		case "", ".":
			return fmt.Errorf("empty or \".\" path element: %w", ErrUnsafePath)
		}
	}
	return nil
}

// Entry is one checked entry handed to a [Walk] callback.
type Entry struct {
	// Name is the entry's clean relative name ("./" prefix and trailing "/"
	// removed).
	Name string
	// Type is tar.TypeReg, tar.TypeDir, tar.TypeSymlink or tar.TypeLink.
	Type byte
	// Mode holds the permission bits.
	Mode fs.FileMode
	// Size is the file's length (regular files only).
	Size int64
	// Linkname is a link's target: for a hard link the clean archive name
	// of an earlier regular file; for a symbolic link the relative target,
	// which resolves inside the archive.
	Linkname string
}

// Walk reads a tar.gz from r and calls fn for every entry after checking it;
// body reads a regular file's content (it is empty for other types). Walk
// stops at the first error, from a check or from fn.
func Walk(r io.Reader, lim Limits, fn func(e Entry, body io.Reader) error) error {
	lim = lim.withDefaults()
	counted := &countingReader{r: r, max: lim.MaxTotalSize}
	gz, err := gzip.NewReader(counted)
	if err != nil {
		return fmt.Errorf("not a gzip stream: %w", err)
	}
	defer gz.Close()
	gz.Multistream(false)
	raw := &countingReader{r: gz, max: lim.MaxTotalSize}
	tr := tar.NewReader(raw)
	seen := map[string]byte{}
	// traversed holds every path a symbolic link's target goes through:
	// no later symbolic link may take one of those places.
	traversed := map[string]bool{}
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return fmt.Errorf("read tar: %w", err)
		}
		n++
		if n > lim.MaxEntries {
			return fmt.Errorf("entry %q: %w (more than %d)", h.Name, ErrTooManyFiles, lim.MaxEntries)
		}
		if h.Typeflag == tar.TypeDir && (h.Name == "./" || h.Name == ".") {
			continue // the archive's root, as BOSH's tarballs list it
		}
		e, err := checkHeader(h, seen, traversed, lim)
		if err != nil {
			return err
		}
		if e.Type == tar.TypeDir && seen[e.Name] == tar.TypeDir {
			continue // a directory listed twice is harmless
		}
		if _, dup := seen[e.Name]; dup {
			return fmt.Errorf("entry %q: %w", e.Name, ErrDuplicate)
		}
		seen[e.Name] = e.Type
		for d := path.Dir(e.Name); d != "."; d = path.Dir(d) {
			if _, ok := seen[d]; !ok {
				seen[d] = tar.TypeDir // implied by the entry
			}
		}
		var body io.Reader = strings.NewReader("")
		var lr *io.LimitedReader
		if e.Type == tar.TypeReg {
			lr = &io.LimitedReader{R: tr, N: e.Size}
			body = lr
		}
		if err := fn(e, body); err != nil {
			return err
		}
		if lr != nil {
			if _, err := io.Copy(io.Discard, lr); err != nil {
				if errors.Is(err, ErrTooLarge) {
					return err
				}
				return fmt.Errorf("entry %q: read: %w", e.Name, err)
			}
		}
	}
}

func checkHeader(h *tar.Header, seen map[string]byte, traversed map[string]bool, lim Limits) (Entry, error) {
	name := strings.TrimPrefix(h.Name, "./")
	if h.Typeflag == tar.TypeDir {
		name = strings.TrimSuffix(name, "/")
	}
	e := Entry{Name: name, Mode: fs.FileMode(h.Mode) & fs.ModePerm, Type: h.Typeflag}
	if err := CheckName(name); err != nil {
		return e, fmt.Errorf("entry %q: %w", h.Name, err)
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if t, ok := seen[d]; ok && t != tar.TypeDir {
			return e, fmt.Errorf("entry %q: parent %q is not a directory: %w", h.Name, d, ErrUnsafePath)
		}
	}
	switch h.Typeflag {
	case tar.TypeReg:
		e.Type = tar.TypeReg
		if h.Size < 0 || h.Size > lim.MaxFileSize {
			return e, fmt.Errorf("entry %q: size %d over the limit of %d bytes: %w", h.Name, h.Size, lim.MaxFileSize, ErrTooLarge)
		}
		e.Size = h.Size
	case tar.TypeDir:
	case tar.TypeSymlink:
		through, err := checkSymlink(name, h.Linkname, seen, traversed)
		if err != nil {
			return e, fmt.Errorf("entry %q: symbolic link to %q: %w", h.Name, h.Linkname, err)
		}
		for _, p := range through {
			traversed[p] = true
		}
		e.Linkname = h.Linkname
	case tar.TypeLink:
		t := strings.TrimPrefix(h.Linkname, "./")
		if err := CheckName(t); err != nil {
			return e, fmt.Errorf("entry %q: hard link to %q: %w", h.Name, h.Linkname, ErrLinkEscape)
		}
		if seen[t] != tar.TypeReg {
			return e, fmt.Errorf("entry %q: hard link to %q, not an earlier regular file: %w", h.Name, h.Linkname, ErrLinkEscape)
		}
		e.Linkname = t
	default:
		return e, fmt.Errorf("entry %q: type %q: %w", h.Name, string(h.Typeflag), ErrEntryType)
	}
	return e, nil
}

// checkSymlink accepts a symbolic link target that stays inside the archive
// however the link is followed: relative, with ".." only as leading
// elements and never climbing above the archive root, no "." or empty
// elements, and no path it goes through being (or later becoming) a
// symbolic link. Then the kernel's resolution equals the lexical one. It
// returns the paths the target goes through.
func checkSymlink(name, target string, seen map[string]byte, traversed map[string]bool) ([]string, error) {
	if traversed[name] {
		return nil, fmt.Errorf("another link's target goes through %q: %w", name, ErrLinkEscape)
	}
	if target == "" || strings.HasPrefix(target, "/") || strings.ContainsAny(target, "\\\x00") {
		return nil, ErrLinkEscape
	}
	els := strings.Split(strings.TrimSuffix(target, "/"), "/")
	base := path.Dir(name)
	i := 0
	for ; i < len(els) && els[i] == ".."; i++ {
		if base == "." {
			return nil, ErrLinkEscape
		}
		base = path.Dir(base)
	}
	if i == len(els) {
		return nil, fmt.Errorf("link to a directory above it: %w", ErrLinkEscape)
	}
	var through []string
	for _, el := range els[i:] {
		if el == ".." || el == "." || el == "" {
			return nil, fmt.Errorf("%q inside the target: %w", el, ErrLinkEscape)
		}
		base = path.Join(base, el)
		if seen[base] == tar.TypeSymlink {
			return nil, fmt.Errorf("goes through link %q: %w", base, ErrLinkEscape)
		}
		through = append(through, base)
	}
	return through, nil
}

type countingReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		return n, fmt.Errorf("more than %d bytes: %w", c.max, ErrTooLarge)
	}
	return n, err
}
