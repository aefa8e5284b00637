package metadata

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// checkPages walks a bbolt file's page tree in a copy of its bytes, the
// way bbolt would, before bbolt is let near it. bbolt trusts its file: a
// branch page that points at itself sends its cursor round forever, a
// freelist page whose count is garbage asks for exabytes, and a page
// number past the end faults. None of that can be recovered from inside
// the process, so it is ruled out here: every page reached must lie inside
// the file and below the high-water mark, be reached once, have the type
// its parent expects, and hold its elements within its bounds.
//
// The layout is bbolt's file format 2 (go.etcd.io/bbolt/internal/common),
// stable since boltdb; the fields are in the machine's byte order.
func checkPages(data []byte) error {
	m, err := pickMeta(data)
	if err != nil {
		return err
	}
	w := pageWalk{data: data, pageSize: uint64(m.pageSize), hwm: m.hwm, seen: make(map[uint64]bool)}
	if m.hwm < 2 || m.hwm > uint64(len(data))/w.pageSize {
		return fmt.Errorf("the file is %d bytes but its pages need %d: it was truncated", len(data), m.hwm*w.pageSize)
	}
	w.seen[0], w.seen[1] = true, true
	if err := w.tree(m.root, 0); err != nil {
		return err
	}
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return err
		}
	}
	return nil
}

// bbolt's format 2 constants.
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeader   = 16 // root pgid u64, sequence u64

	branchPage   = 0x01
	leafPage     = 0x02
	freelistPage = 0x10
	bucketLeaf   = 0x01

	noFreelist = ^uint64(0)
	// metaSumLen is the part of a meta the checksum covers: everything
	// before the checksum field.
	metaSumLen = 4*4 + 8 + 8 + 8 + 8 + 8
)

type boltMeta struct {
	pageSize           uint32
	root, freelist     uint64
	hwm, txid          uint64
	version, magic     uint32
	checksum, computed uint64
}

func (m boltMeta) valid() bool {
	return m.magic == boltMagic && m.version == boltVersion && m.checksum == m.computed
}

var ne = binary.NativeEndian

func readMeta(data []byte, off uint64) (boltMeta, bool) {
	if off+pageHeaderSize+metaSumLen+8 > uint64(len(data)) {
		return boltMeta{}, false
	}
	b := data[off+pageHeaderSize:]
	h := fnv.New64a()
	h.Write(b[:metaSumLen])
	return boltMeta{
		magic: ne.Uint32(b[0:]), version: ne.Uint32(b[4:]), pageSize: ne.Uint32(b[8:]),
		root: ne.Uint64(b[16:]), freelist: ne.Uint64(b[32:]), hwm: ne.Uint64(b[40:]), txid: ne.Uint64(b[48:]),
		checksum: ne.Uint64(b[metaSumLen:]), computed: h.Sum64(),
	}, true
}

// pickMeta chooses the meta page bbolt would: the page size from the first
// valid meta (the second one searched at the offsets bbolt tries), then of
// the two metas at that size the valid one with the higher transaction.
func pickMeta(data []byte) (boltMeta, error) {
	var pageSize uint32
	if m, ok := readMeta(data, 0); ok && m.valid() {
		pageSize = m.pageSize
	} else {
		for i := 0; i <= 14 && pageSize == 0; i++ {
			if m, ok := readMeta(data, 1024<<i); ok && m.valid() {
				pageSize = m.pageSize
			}
		}
	}
	if pageSize < 512 || pageSize > 1<<24 || pageSize&(pageSize-1) != 0 {
		return boltMeta{}, errors.New("no valid meta page: this is not a bbolt file, or both of its headers are damaged")
	}
	m0, ok0 := readMeta(data, 0)
	m1, ok1 := readMeta(data, uint64(pageSize))
	ok0, ok1 = ok0 && m0.valid() && m0.pageSize == pageSize, ok1 && m1.valid() && m1.pageSize == pageSize
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, ok1 && !ok0:
		return m1, nil
	case ok0:
		return m0, nil
	}
	return boltMeta{}, errors.New("no valid meta page at the file's page size")
}

type pageWalk struct {
	data          []byte
	pageSize, hwm uint64
	seen          map[uint64]bool
}

// page returns page id with its overflow pages, after checking it lies in
// the file, below the high-water mark, and was not reached before.
func (w *pageWalk) page(id uint64, flags uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d is out of range [2, %d)", id, w.hwm)
	}
	off := id * w.pageSize
	hdr := w.data[off : off+pageHeaderSize]
	if got := ne.Uint64(hdr); got != id {
		return nil, fmt.Errorf("page %d identifies as page %d", id, got)
	}
	if got := ne.Uint16(hdr[8:]); got != flags {
		return nil, fmt.Errorf("page %d has type %#x, want %#x", id, got, flags)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("page %d runs %d pages past the high-water mark %d", id, overflow, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d is reached twice", i)
		}
		w.seen[i] = true
	}
	return w.data[off : off+(overflow+1)*w.pageSize], nil
}

// tree checks the B+tree of one bucket rooted at page id.
func (w *pageWalk) tree(id uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: tree deeper than 64", id)
	}
	off := id * w.pageSize
	if id < 2 || id >= w.hwm || off+pageHeaderSize > uint64(len(w.data)) {
		return fmt.Errorf("page %d is out of range [2, %d)", id, w.hwm)
	}
	flags := ne.Uint16(w.data[off+8:])
	if flags != branchPage && flags != leafPage {
		return fmt.Errorf("page %d has type %#x where a branch or leaf belongs", id, flags)
	}
	p, err := w.page(id, flags)
	if err != nil {
		return err
	}
	if flags == leafPage {
		return w.leaf(p, id, depth)
	}
	count := int(ne.Uint16(p[10:]))
	if count == 0 {
		return fmt.Errorf("branch page %d has no elements", id)
	}
	for i := range count {
		e, err := element(p, i)
		if err != nil {
			return fmt.Errorf("branch page %d: %w", id, err)
		}
		pos, ksize := uint64(ne.Uint32(e)), uint64(ne.Uint32(e[4:]))
		if ksize == 0 {
			return fmt.Errorf("branch page %d element %d has an empty key", id, i)
		}
		if err := within(p, e, pos, ksize); err != nil {
			return fmt.Errorf("branch page %d element %d: %w", id, i, err)
		}
		if err := w.tree(ne.Uint64(e[8:]), depth+1); err != nil {
			return err
		}
	}
	return nil
}

// leaf checks a leaf page's elements (p is the page, or an inline
// bucket's page inside a value) and the buckets they hold.
func (w *pageWalk) leaf(p []byte, id uint64, depth int) error {
	count := int(ne.Uint16(p[10:]))
	for i := range count {
		e, err := element(p, i)
		if err != nil {
			return fmt.Errorf("leaf page %d: %w", id, err)
		}
		flags, pos := ne.Uint32(e), uint64(ne.Uint32(e[4:]))
		ksize, vsize := uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		if ksize == 0 {
			return fmt.Errorf("leaf page %d element %d has an empty key", id, i)
		}
		if err := within(p, e, pos, ksize+vsize); err != nil {
			return fmt.Errorf("leaf page %d element %d: %w", id, i, err)
		}
		if flags&bucketLeaf == 0 {
			continue
		}
		start := uint64(len(p)-len(e)) + pos + ksize
		v := p[start : start+vsize]
		if len(v) < bucketHeader {
			return fmt.Errorf("leaf page %d element %d: bucket header of %d bytes", id, i, len(v))
		}
		if root := ne.Uint64(v); root != 0 {
			if err := w.tree(root, depth+1); err != nil {
				return err
			}
			continue
		}
		// An inline bucket: a leaf page inside the value.
		inline := v[bucketHeader:]
		if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != leafPage {
			return fmt.Errorf("leaf page %d element %d: inline bucket is not a leaf page", id, i)
		}
		if depth > 64 {
			return fmt.Errorf("leaf page %d: buckets nested deeper than 64", id)
		}
		if err := w.leaf(inline, id, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// element returns element i of page p, checking it lies inside the page.
func element(p []byte, i int) ([]byte, error) {
	start := pageHeaderSize + i*elementSize
	if start+elementSize > len(p) {
		return nil, fmt.Errorf("element %d lies past the page's end", i)
	}
	return p[start:], nil
}

// within checks that n bytes at pos, counted from element e as bbolt
// counts them, lie inside page p.
func within(p, e []byte, pos, n uint64) error {
	base := uint64(len(p) - len(e))
	if end := base + pos + n; end < base || end > uint64(len(p)) {
		return fmt.Errorf("data at %d+%d lies past the page's end", pos, n)
	}
	return nil
}

func (w *pageWalk) freelist(id uint64) error {
	p, err := w.page(id, freelistPage)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	start, count := uint64(pageHeaderSize), uint64(ne.Uint16(p[10:]))
	if count == 0xFFFF {
		count, start = ne.Uint64(p[pageHeaderSize:]), start+8
	}
	if count > (uint64(len(p))-start)/8 {
		return fmt.Errorf("freelist page %d claims %d entries, more than fit", id, count)
	}
	free := make(map[uint64]bool, count)
	for i := range count {
		f := ne.Uint64(p[start+8*i:])
		switch {
		case f < 2 || f >= w.hwm:
			return fmt.Errorf("freelist page %d lists page %d, out of range [2, %d)", id, f, w.hwm)
		case free[f]:
			return fmt.Errorf("freelist page %d lists page %d twice", id, f)
		case w.seen[f]:
			return fmt.Errorf("freelist page %d lists page %d, which is in use", id, f)
		}
		free[f] = true
	}
	return nil
}
