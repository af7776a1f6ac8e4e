package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Large payloads (DESIGN.md, "Starting runs, and who may publish what"): an input or output
// over the inline limit is stored in the Object Store jetflow_blobs and passed by reference,
// {"$blob": "<sha256>", "size": N}. Every read checks the bytes against the SHA-256 the
// reference names, so whoever may write blobs cannot alter anyone's data, only make a read
// fail. A blob belongs to one run: it is stored as <runID>/<sha256> and purged with its run
// by the reaper (a blob shared by two runs could not be purged with either).

const (
	// DefaultInlineLimit is the largest value carried inline in a step, a run record or a
	// node state; a larger one goes to the blobs bucket.
	DefaultInlineLimit = 256 << 10
	// DefaultMaxPayload is the largest input or output accepted at all.
	DefaultMaxPayload = 16 << 20
)

var (
	// ErrBlobCorrupt means a blob's bytes do not match the SHA-256 or size its reference names.
	ErrBlobCorrupt = errors.New("blob does not match its reference")
	// ErrBlobMissing means the blobs bucket has no blob under a reference.
	ErrBlobMissing = errors.New("blob is missing")
	// ErrTooLarge means a payload is over the hard limit.
	ErrTooLarge = errors.New("payload too large")
)

// BlobRef is the reference that stands for a value stored in the blobs bucket.
type BlobRef struct {
	SHA256 string `json:"$blob"`
	Size   int    `json:"size"`
}

// blobMarker is how every reference begins; a value without it holds no reference.
var blobMarker = []byte(`"$blob"`)

// ParseBlobRef reports whether v is a reference: an object with exactly the keys $blob (64
// lower-case hex digits) and size (not negative).
func ParseBlobRef(v []byte) (BlobRef, bool) {
	v = bytes.TrimSpace(v)
	if len(v) > 256 || len(v) == 0 || v[0] != '{' || !bytes.Contains(v, blobMarker) {
		return BlobRef{}, false
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(v, &fields) != nil || len(fields) != 2 {
		return BlobRef{}, false
	}
	var ref BlobRef
	if json.Unmarshal(fields["$blob"], &ref.SHA256) != nil || json.Unmarshal(fields["size"], &ref.Size) != nil {
		return BlobRef{}, false
	}
	if ref.Size < 0 || len(ref.SHA256) != 64 || strings.ToLower(ref.SHA256) != ref.SHA256 {
		return BlobRef{}, false
	}
	if _, err := hex.DecodeString(ref.SHA256); err != nil {
		return BlobRef{}, false
	}
	return ref, true
}

// JSON returns the reference as it is written in place of the value.
func (r BlobRef) JSON() json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"$blob":%q,"size":%d}`, r.SHA256, r.Size))
}

// blobName is the object name of a run's blob.
func blobName(run, sha string) string { return run + "/" + sha }

// blobStore binds the blobs bucket on first use.
func (s *Store) blobStore(ctx context.Context) (jetstream.ObjectStore, error) {
	s.blobMu.Lock()
	defer s.blobMu.Unlock()
	if s.objs != nil {
		return s.objs, nil
	}
	if s.js == nil {
		return nil, errors.New("blobs: the store was opened without a JetStream context")
	}
	obs, err := s.js.ObjectStore(ctx, s.names.BlobsBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("object store %s is missing: run `jetflow setup` (large payloads are stored there)", s.names.BlobsBucket())
	}
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", s.names.BlobsBucket(), err)
	}
	s.objs = obs
	return obs, nil
}

// PutBlob stores data as a blob of run and returns its reference. A blob already stored
// under that name with the same size and digest is not written again.
func (s *Store) PutBlob(ctx context.Context, run string, data []byte) (BlobRef, error) {
	sum := sha256.Sum256(data)
	ref := BlobRef{SHA256: hex.EncodeToString(sum[:]), Size: len(data)}
	obs, err := s.blobStore(ctx)
	if err != nil {
		return ref, err
	}
	name := blobName(run, ref.SHA256)
	if info, err := obs.GetInfo(ctx, name); err == nil && !info.Deleted && int(info.Size) == len(data) && info.Digest == "SHA-256="+base64.URLEncoding.EncodeToString(sum[:]) {
		return ref, nil
	}
	if _, err := obs.PutBytes(ctx, name, data); err != nil {
		return ref, fmt.Errorf("store blob %s of run %s: %w", ref.SHA256[:12], run, err)
	}
	return ref, nil
}

// GetBlob reads the blob ref of run, checks it against the reference, and returns its bytes;
// a blob over max bytes (0: DefaultMaxPayload) is not read.
func (s *Store) GetBlob(ctx context.Context, run string, ref BlobRef, max int) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxPayload
	}
	if ref.Size > max {
		return nil, fmt.Errorf("%w: blob %s of run %s is %d bytes; the limit is %d bytes", ErrTooLarge, ref.SHA256[:12], run, ref.Size, max)
	}
	name := blobName(run, ref.SHA256)
	if data, ok := s.blobCache.get(name); ok {
		return data, nil
	}
	obs, err := s.blobStore(ctx)
	if err != nil {
		return nil, err
	}
	data, err := obs.GetBytes(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return nil, fmt.Errorf("%w: blob %s of run %s (%d bytes) is not in %s", ErrBlobMissing, ref.SHA256[:12], run, ref.Size, s.names.BlobsBucket())
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return nil, fmt.Errorf("%w: blob %s of run %s: its chunks do not match its digest", ErrBlobCorrupt, ref.SHA256[:12], run)
	case err != nil:
		return nil, fmt.Errorf("read blob %s of run %s: %w", ref.SHA256[:12], run, err)
	}
	sum := sha256.Sum256(data)
	if len(data) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, fmt.Errorf("%w: blob %s of run %s: read %d bytes with another SHA-256", ErrBlobCorrupt, ref.SHA256[:12], run, len(data))
	}
	s.blobCache.put(name, data)
	return data, nil
}

// Blob cache bounds: a blob is named by its content's SHA-256 and never changes, so a read
// one is kept (the items of a for_each node all read their node's input blob).
const (
	blobCacheBytes = 32 << 20
	blobCacheOne   = 4 << 20
)

// blobCache keeps recently read blobs, by name, up to blobCacheBytes, dropping the oldest.
type blobCache struct {
	mu    sync.Mutex
	data  map[string][]byte
	order []string
	size  int
}

// get returns a copy of the blob called name, if kept.
func (c *blobCache) get(name string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.data[name]
	if !ok {
		return nil, false
	}
	return bytes.Clone(b), true
}

// put keeps a copy of data as the blob called name, when it is small enough.
func (c *blobCache) put(name string, data []byte) {
	if len(data) > blobCacheOne {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.data[name]; ok {
		return
	}
	if c.data == nil {
		c.data = map[string][]byte{}
	}
	for c.size+len(data) > blobCacheBytes && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.size -= len(c.data[old])
		delete(c.data, old)
	}
	c.data[name] = bytes.Clone(data)
	c.order = append(c.order, name)
	c.size += len(data)
}

// Offload returns v as it is when it is at most inline bytes (0: DefaultInlineLimit), and
// otherwise stores it as a blob of run and returns the reference.
func (s *Store) Offload(ctx context.Context, run string, v json.RawMessage, inline int) (json.RawMessage, error) {
	if inline <= 0 {
		inline = DefaultInlineLimit
	}
	if len(v) <= inline {
		return v, nil
	}
	ref, err := s.PutBlob(ctx, run, v)
	if err != nil {
		return nil, err
	}
	return ref.JSON(), nil
}

// Load returns v, or the value its reference stands for (read and checked, at most max
// bytes: 0 is DefaultMaxPayload).
func (s *Store) Load(ctx context.Context, run string, v json.RawMessage, max int) (json.RawMessage, error) {
	ref, ok := ParseBlobRef(v)
	if !ok {
		return v, nil
	}
	return s.GetBlob(ctx, run, ref, max)
}

// LoadNodeInput returns a node input ({"input": …, "nodes": {…}}) with every reference in it
// replaced by its value: the whole input's, the run input's and each parent output's. The
// limit max holds for each value, not for their sum (a node after a 10 MiB step sees the
// 10 MiB run input and the 10 MiB output). An input with no reference comes back as it is,
// unparsed.
func (s *Store) LoadNodeInput(ctx context.Context, run string, in json.RawMessage, max int) (json.RawMessage, error) {
	if !bytes.Contains(in, blobMarker) {
		return in, nil
	}
	in, err := s.Load(ctx, run, in, max)
	if err != nil || !bytes.Contains(in, blobMarker) {
		return in, err
	}
	var ni struct {
		Input json.RawMessage            `json:"input"`
		Nodes map[string]json.RawMessage `json:"nodes"`
	}
	if json.Unmarshal(in, &ni) != nil {
		return in, nil // not a node input: handed over as it is
	}
	if ni.Input, err = s.Load(ctx, run, ni.Input, max); err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(ni.Nodes)) {
		if ni.Nodes[k], err = s.Load(ctx, run, ni.Nodes[k], max); err != nil {
			return nil, err
		}
	}
	if ni.Input == nil {
		ni.Input = json.RawMessage("null")
	}
	if ni.Nodes == nil {
		ni.Nodes = map[string]json.RawMessage{}
	}
	return json.Marshal(ni)
}

// BlobExists reports whether run has the blob ref (its size checked, not its bytes).
func (s *Store) BlobExists(ctx context.Context, run string, ref BlobRef) error {
	obs, err := s.blobStore(ctx)
	if err != nil {
		return err
	}
	info, err := obs.GetInfo(ctx, blobName(run, ref.SHA256))
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return fmt.Errorf("%w: blob %s of run %s (%d bytes) is not in %s", ErrBlobMissing, ref.SHA256[:12], run, ref.Size, s.names.BlobsBucket())
	case err != nil:
		return err
	case int(info.Size) != ref.Size:
		return fmt.Errorf("%w: blob %s of run %s is %d bytes, its reference says %d", ErrBlobCorrupt, ref.SHA256[:12], run, info.Size, ref.Size)
	}
	return nil
}

// purgeBlobs deletes the blobs of the runs in purge, and those older than orphanAge whose run
// has no record (a start that stored its input and was never taken, or was refused). It
// lists the bucket once; an empty or missing bucket costs one status read.
func (s *Store) purgeBlobs(ctx context.Context, purge map[string]bool, orphanAge time.Duration, now time.Time) (int, error) {
	obs, err := s.blobStore(ctx)
	if err != nil {
		return 0, nil // no bucket (an install set up before blobs): nothing to purge
	}
	st, err := obs.Status(ctx)
	if err != nil {
		return 0, err
	}
	if st.Size() == 0 {
		return 0, nil
	}
	infos, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, info := range infos {
		run, _, ok := strings.Cut(info.Name, "/")
		if !ok {
			continue
		}
		if !purge[run] {
			if orphanAge <= 0 || now.Sub(info.ModTime) < orphanAge {
				continue
			}
			if _, err := s.Run(ctx, run); !errors.Is(err, ErrNotFound) {
				continue // a live run's, or unknown: keep it
			}
		}
		if err := obs.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return n, fmt.Errorf("delete blob %s: %w", info.Name, err)
		}
		n++
	}
	return n, nil
}
