package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

var (
	// ErrConflict means a compare-and-set lost: the key changed (or exists) since it was read.
	ErrConflict = errors.New("checkpoint: conflicting write")
	// ErrNotFound means the key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrNotSetUp means the buckets are missing: run `jetflow setup` (or `jetflow dev`).
	ErrNotSetUp = errors.New("jetflow is not set up on this NATS server: run `jetflow setup` first")
)

// MaxCASRetries is how many times a conflicting read-modify-write is retried.
const MaxCASRetries = 5

// Store reads and writes run state and the definition registry.
type Store struct {
	js    jetstream.JetStream
	runs  jetstream.KeyValue
	wfs   jetstream.KeyValue
	names workflow.Names

	blobMu    sync.Mutex
	objs      jetstream.ObjectStore // the blobs bucket, bound on first use (blobs.go)
	blobCache blobCache             // blobs read lately (blobs.go)
	itemsSeen sync.Map              // for_each nodes' states last written here, by key (items.go)

	defMu sync.RWMutex
	defs  map[string]*workflow.Workflow

	markerTTL atomic.Int64 // the runs bucket's marker TTL once read: -1 none, 0 not read yet
}

// Open binds the buckets of an installation that `setup` created.
func Open(ctx context.Context, js jetstream.JetStream, names workflow.Names) (*Store, error) {
	runs, err := js.KeyValue(ctx, names.RunsBucket())
	if err != nil {
		return nil, bindErr(names.RunsBucket(), err)
	}
	wfs, err := js.KeyValue(ctx, names.WorkflowsBucket())
	if err != nil {
		return nil, bindErr(names.WorkflowsBucket(), err)
	}
	return &Store{js: js, runs: runs, wfs: wfs, names: names, defs: map[string]*workflow.Workflow{}}, nil
}

func bindErr(bucket string, err error) error {
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return ErrNotSetUp
	}
	return fmt.Errorf("open bucket %s: %w", bucket, err)
}

// KV returns the runs bucket, for watchers.
func (s *Store) KV() jetstream.KeyValue { return s.runs }

// purgeOpts are the options of a purge in the runs bucket: when the bucket has a marker TTL
// (setup gives it one), the purge marker gets it too and expires, instead of staying for
// ever. The bucket's setting is read once.
func (s *Store) purgeOpts(ctx context.Context) []jetstream.KVDeleteOpt {
	ttl := s.markerTTL.Load()
	if ttl == 0 {
		st, err := s.runs.Status(ctx)
		if err != nil {
			return nil // read again next time
		}
		ttl = -1
		if d := st.LimitMarkerTTL(); d > 0 {
			ttl = int64(d)
		}
		s.markerTTL.Store(ttl)
	}
	if ttl < 0 {
		return nil
	}
	return []jetstream.KVDeleteOpt{jetstream.PurgeTTL(time.Duration(ttl))}
}

// Read returns key's latest entry, as kv.Get does, and follows a change of the bucket's read
// mode under a bound handle. Setup gives a one-replica runs bucket direct gets (the one server
// that stores it answers them, so they see every acknowledged write) and turns them off when
// the bucket gets more replicas (any replica would answer, and a lagging follower would
// return an old value). nats.go chose the mode when the handle was bound; once direct gets
// are off, its direct requests find no responder, so Read refreshes the handle's stream info
// (which switches it to leader reads) and reads again. Stale data is never returned on the way:
// a replicated bucket never has direct gets on.
func Read(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, nats.ErrNoResponders) {
		if _, serr := kv.Status(ctx); serr == nil {
			e, err = kv.Get(ctx, key)
		}
	}
	return e, err
}

// get reads key into v and returns its revision; a missing key is ErrNotFound.
func get(ctx context.Context, kv jetstream.KeyValue, key string, v any) (uint64, error) {
	e, err := Read(ctx, kv, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return 0, ErrNotFound
		}
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("read %s: stored value is not valid: %w", key, err)
	}
	return e.Revision(), nil
}

// put creates key (rev 0) or updates it at rev. Conflicts are ErrConflict.
func put(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := marshalValue(v)
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	if rev == 0 {
		rev, err = kv.Create(ctx, key, b)
	} else {
		rev, err = kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("%w: %s", ErrConflict, key)
		}
		return 0, fmt.Errorf("write %s: %w", key, err)
	}
	return rev, nil
}

// Run reads a run record.
func (s *Store) Run(ctx context.Context, id string) (*Run, error) {
	var r Run
	if _, err := get(ctx, s.runs, workflow.RunKey(id), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// CreateRun writes a new run record; ErrConflict if the ID is taken.
func (s *Store) CreateRun(ctx context.Context, r *Run) error {
	_, err := put(ctx, s.runs, workflow.RunKey(r.ID), r, 0)
	return err
}

// Node reads a node state and its revision; a node never tried is (nil, 0, nil).
func (s *Store) Node(ctx context.Context, run, node string) (*Node, uint64, error) {
	var n Node
	rev, err := get(ctx, s.runs, workflow.NodeKey(run, node), &n)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return &n, rev, nil
}

// PutNode creates (rev 0) or updates (at rev) a node state and returns the new revision.
func (s *Store) PutNode(ctx context.Context, run, node string, n *Node, rev uint64) (uint64, error) {
	return put(ctx, s.runs, workflow.NodeKey(run, node), n, rev)
}

// DropProgress removes the progress a node saved, if it saved any: a missing key writes
// nothing (a delete would leave a marker per call). The purge's marker expires with the
// bucket's marker TTL.
func (s *Store) DropProgress(ctx context.Context, run, node string) error {
	key := workflow.ProgressKey(run, node)
	if _, err := Read(ctx, s.runs, key); errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := s.runs.Purge(ctx, key, s.purgeOpts(ctx)...); err != nil {
		return fmt.Errorf("purge %s: %w", key, err)
	}
	return nil
}

// End reads a run's end; nil when the run has not ended.
func (s *Store) End(ctx context.Context, run string) (*End, uint64, error) {
	var e End
	rev, err := get(ctx, s.runs, workflow.EndKey(run), &e)
	if errors.Is(err, ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return &e, rev, nil
}

// CreateEnd records a run's end unless one exists; it reports whether this call wrote it.
func (s *Store) CreateEnd(ctx context.Context, run string, e *End) (bool, error) {
	_, err := put(ctx, s.runs, workflow.EndKey(run), e, 0)
	if errors.Is(err, ErrConflict) {
		return false, nil
	}
	return err == nil, err
}

// Cancelled reports whether an operator cancelled the run.
func (s *Store) Cancelled(ctx context.Context, run string) (bool, error) {
	var c Cancel
	_, err := get(ctx, s.runs, workflow.CancelKey(run), &c)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Join adds member to the set at key (a join.<run>.<node> or sinks.<run> key) and reports
// whether the set now holds every name in want. It decides with compare-and-set writes only:
// a member already present writes nothing.
func (s *Store) Join(ctx context.Context, key, member string, want []string) (bool, error) {
	for range MaxCASRetries {
		var j Join
		rev, err := get(ctx, s.runs, key, &j)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return false, err
		}
		if !slices.Contains(j.Done, member) {
			j.Done = append(j.Done, member)
			if _, err := put(ctx, s.runs, key, &j, rev); err != nil {
				if errors.Is(err, ErrConflict) {
					continue
				}
				return false, err
			}
		}
		for _, w := range want {
			if !slices.Contains(j.Done, w) {
				return false, nil
			}
		}
		return true, nil
	}
	return false, fmt.Errorf("%w: %s after %d tries", ErrConflict, key, MaxCASRetries)
}

// ApplyWorkflow stores a definition in the registry: the immutable def.<hash> first, then
// wf.<name>. It reports the hash and whether the registry changed.
func (s *Store) ApplyWorkflow(ctx context.Context, w *workflow.Workflow) (string, bool, error) {
	canon, err := w.Canonical()
	if err != nil {
		return "", false, err
	}
	hash, err := w.Hash()
	if err != nil {
		return "", false, err
	}
	if _, err := s.wfs.Create(ctx, workflow.DefinitionKey(hash), canon); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return "", false, fmt.Errorf("store definition %s: %w", w.Name, err)
	}
	for range MaxCASRetries {
		var ref WorkflowRef
		rev, err := get(ctx, s.wfs, workflow.WorkflowKey(w.Name), &ref)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", false, err
		}
		if ref.Hash == hash {
			return hash, false, nil
		}
		ref = WorkflowRef{Name: w.Name, Hash: hash, Updated: time.Now().UTC()}
		if _, err := put(ctx, s.wfs, workflow.WorkflowKey(w.Name), &ref, rev); err != nil {
			if errors.Is(err, ErrConflict) {
				continue
			}
			return "", false, err
		}
		return hash, true, nil
	}
	return "", false, fmt.Errorf("%w: workflow %s", ErrConflict, w.Name)
}

// WorkflowRef reads the registry entry of a workflow name; ErrNotFound if there is none.
func (s *Store) WorkflowRef(ctx context.Context, name string) (*WorkflowRef, error) {
	var ref WorkflowRef
	if _, err := get(ctx, s.wfs, workflow.WorkflowKey(name), &ref); err != nil {
		return nil, err
	}
	return &ref, nil
}

// Workflows lists the registry entries, sorted by name.
func (s *Store) Workflows(ctx context.Context) ([]*WorkflowRef, error) {
	l, err := s.wfs.ListKeysFiltered(ctx, workflow.WorkflowKey("*"))
	if err != nil {
		return nil, err
	}
	var out []*WorkflowRef
	for k := range l.Keys() {
		var ref WorkflowRef
		if _, err := get(ctx, s.wfs, k, &ref); err == nil {
			out = append(out, &ref)
		}
	}
	slices.SortFunc(out, func(a, b *WorkflowRef) int { return cmpString(a.Name, b.Name) })
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Definition returns the definition with the given hash. Definitions are immutable, so each
// is read from the broker once per process and cached forever.
func (s *Store) Definition(ctx context.Context, hash string) (*workflow.Workflow, error) {
	s.defMu.RLock()
	w := s.defs[hash]
	s.defMu.RUnlock()
	if w != nil {
		return w, nil
	}
	e, err := s.wfs.Get(ctx, workflow.DefinitionKey(hash))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("read definition %s: %w", hash, err)
	}
	w = new(workflow.Workflow)
	if err := json.Unmarshal(e.Value(), w); err != nil {
		return nil, fmt.Errorf("definition %s is not valid: %w", hash, err)
	}
	w.Sinks() // build the graph indexes now, before the definition is shared between goroutines
	s.defMu.Lock()
	s.defs[hash] = w
	s.defMu.Unlock()
	return w, nil
}
