// Package setup creates and updates what an installation needs on the broker: the steps,
// DLQ and advisory streams, the KV buckets, and the durable consumers of node types. It is
// idempotent, and says exactly what it cannot change in place.
package setup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/workflow"
)

// Defaults of the broker objects.
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 20
	DefaultMaxAckPending = 1000
	DefaultDLQRetention  = 30 * 24 * time.Hour
	DuplicateWindow      = 10 * time.Minute
	AdvisoryRetention    = 7 * 24 * time.Hour
	WorkerPresenceTTL    = 15 * time.Second
	// MarkerTTL is how long the runs and breakers buckets keep the marker a purged key
	// leaves (the reaper purges every key of a finished run; a closed breaker's keys go):
	// long enough for a watcher that lost its connection for a moment to see the purge,
	// short enough that purged keys do not pile up as markers for ever.
	MarkerTTL = time.Hour
	// CacheTTL is the llm cache bucket's TTL on a server that cannot expire keys one by one.
	CacheTTL = 24 * time.Hour
)

// Config says what to create.
type Config struct {
	// Names of the installation (prefix).
	Names workflow.Names
	// Replicas of every stream and bucket: 1 to 5 (3 on a cluster). Zero keeps what an
	// existing install has (and makes 1 for what is new), so tuning one node type never
	// changes the replication of the rest.
	Replicas int
	// DLQRetention is how long DLQ entries are kept (default 30 days).
	DLQRetention time.Duration
	// Types are node types whose consumers to create besides the built-in ones.
	Types []ConsumerConfig
}

// ConsumerConfig tunes the consumer of one node type.
type ConsumerConfig struct {
	// Type is the node type.
	Type string
	// AckWait is how long a delivered step may go without an ack or heartbeat (default 30 s).
	AckWait time.Duration
	// MaxAckPending is the type's cluster-wide cap on steps in flight (default 1,000).
	MaxAckPending int
	// MaxDeliver is the last net against poison steps (default 20).
	MaxDeliver int
}

// WithDefaults returns c with zero fields filled in.
func (c ConsumerConfig) WithDefaults() ConsumerConfig {
	c.AckWait = cmp.Or(c.AckWait, DefaultAckWait)
	c.MaxAckPending = cmp.Or(c.MaxAckPending, DefaultMaxAckPending)
	c.MaxDeliver = cmp.Or(c.MaxDeliver, DefaultMaxDeliver)
	return c
}

// Report lists what Run did, one line an object.
type Report struct {
	Lines []string
}

func (r *Report) add(format string, args ...any) {
	r.Lines = append(r.Lines, fmt.Sprintf(format, args...))
}

// Run creates or updates every stream, bucket and consumer. It is safe to run again.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config) (*Report, error) {
	n := cfg.Names
	if n.Prefix() == "" {
		n = workflow.MustNames("")
	}
	replicas := cfg.Replicas // 0: keep existing, 1 for new
	rep := &Report{}
	streams := []jetstream.StreamConfig{
		{
			Name:              n.StepsStream(),
			Description:       "jetflow steps and pending schedules",
			Subjects:          n.StepSubjects(),
			Retention:         jetstream.WorkQueuePolicy,
			Storage:           jetstream.FileStorage,
			Discard:           jetstream.DiscardOld,
			Duplicates:        DuplicateWindow,
			AllowMsgSchedules: true,
			AllowRollup:       true,
			Replicas:          replicas,
		},
		{
			Name:        n.DLQStream(),
			Description: "jetflow dead-letter queue",
			Subjects:    n.DLQSubjects(),
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      cmp.Or(cfg.DLQRetention, DefaultDLQRetention),
			Duplicates:  DuplicateWindow,
			Replicas:    replicas,
		},
		{
			Name:        n.AdvisoryStream(),
			Description: "captured MAX_DELIVERIES advisories of the steps stream",
			Subjects:    []string{n.AdvisorySubject()},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			MaxAge:      AdvisoryRetention,
			Replicas:    replicas,
		},
	}
	for _, sc := range streams {
		if err := ensureStream(ctx, js, sc, rep); err != nil {
			return rep, err
		}
	}
	// direct is whether a bucket may answer reads from any replica (nats.go then reads with
	// direct gets, which skip the stream leader's API queue). The runs bucket decides
	// idempotency, so it gets them only with one replica, where the one server that stores
	// it answers and sees every acknowledged write (checkpoint.Read follows a later change).
	buckets := []struct {
		cfg    jetstream.KeyValueConfig
		direct func(replicas int) bool
	}{
		{jetstream.KeyValueConfig{Bucket: n.RunsBucket(), Description: "jetflow runs, node states, joins and ends", History: 1, Storage: jetstream.FileStorage, Replicas: replicas, LimitMarkerTTL: MarkerTTL}, singleReplica},
		{jetstream.KeyValueConfig{Bucket: n.WorkflowsBucket(), Description: "jetflow workflow registry", History: 1, Storage: jetstream.FileStorage, Replicas: replicas}, always},
		{jetstream.KeyValueConfig{Bucket: n.BreakersBucket(), Description: "jetflow shared breaker trips", History: 1, Storage: jetstream.FileStorage, Replicas: replicas, LimitMarkerTTL: MarkerTTL}, never},
		{jetstream.KeyValueConfig{Bucket: n.WorkersBucket(), Description: "jetflow worker presence", History: 1, TTL: WorkerPresenceTTL, Storage: jetstream.FileStorage, Replicas: replicas}, always},
		// Each answer is created with its own TTL (worker --cache-ttl); on a server without
		// per-key TTLs the bucket's own TTL applies instead.
		{jetstream.KeyValueConfig{Bucket: n.CacheBucket(), Description: "jetflow llm answers by request hash", History: 1, Storage: jetstream.FileStorage, Replicas: replicas, LimitMarkerTTL: MarkerTTL}, always},
	}
	markers := markersSupported(ctx, js)
	for _, b := range buckets {
		if !markers && b.cfg.Bucket == n.CacheBucket() {
			b.cfg.LimitMarkerTTL, b.cfg.TTL = 0, CacheTTL
			rep.add("bucket %s: answers expire after %s, whatever --cache-ttl says (per-key TTLs need nats-server 2.11 or later)", b.cfg.Bucket, CacheTTL)
		} else if !markers && b.cfg.LimitMarkerTTL > 0 {
			b.cfg.LimitMarkerTTL = 0
			rep.add("bucket %s: purge markers are kept for ever (this server cannot expire them; nats-server 2.11 or later can)", b.cfg.Bucket)
		}
		if err := ensureBucket(ctx, js, b.cfg, b.direct, rep); err != nil {
			return rep, err
		}
	}
	if err := ensureBlobs(ctx, js, n.BlobsBucket(), replicas, rep); err != nil {
		return rep, err
	}
	// Built-in types get their consumer when it is missing; an existing one is updated only
	// when this call names its type, so a plain setup keeps what an operator tuned.
	types := map[string]ConsumerConfig{}
	named := map[string]bool{}
	for _, t := range append(workflow.BuiltinTypes(), workflow.StartConsumerType) {
		types[t] = ConsumerConfig{Type: t}
	}
	for _, t := range cfg.Types {
		types[t.Type] = t
		named[t.Type] = true
	}
	for _, t := range slices.Sorted(maps.Keys(types)) {
		if err := EnsureConsumer(ctx, js, n, types[t], named[t], replicas, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, rep *Report) error {
	s, err := js.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
		rep.add("stream %s: created", sc.Name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", sc.Name, err)
	}
	cur := s.CachedInfo().Config
	if sc.Replicas == 0 {
		sc.Replicas = cur.Replicas
	}
	if cur.Retention != sc.Retention {
		return fmt.Errorf("stream %s has retention %s, want %s: it cannot be changed in place; move its messages away and delete it, then run setup again", sc.Name, cur.Retention, sc.Retention)
	}
	if cur.Storage != sc.Storage {
		return fmt.Errorf("stream %s has %s storage, want %s: it cannot be changed in place; recreate the stream", sc.Name, cur.Storage, sc.Storage)
	}
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("update stream %s: %w", sc.Name, err)
	}
	if sc.Replicas != cur.Replicas {
		if err := waitReplicas(ctx, js, sc.Name, sc.Replicas); err != nil {
			return err
		}
	}
	rep.add("stream %s: up to date", sc.Name)
	return nil
}

// replicaWait bounds how long setup waits for a stream whose replicas it changed.
const replicaWait = time.Minute

// waitReplicas waits until stream name has a leader and want-1 current followers, and then
// takes a write: a stream just scaled up answers no publish until its new peers caught up
// (the first write after `setup --replicas 3` would otherwise hang until its timeout).
func waitReplicas(ctx context.Context, js jetstream.JetStream, name string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, replicaWait)
	defer cancel()
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			if c := s.CachedInfo().Cluster; want <= 1 || c != nil && c.Leader != "" && len(c.Replicas) == want-1 && allCurrent(c.Replicas) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s did not reach %d current replicas within %s: check the cluster (`nats stream info %s`) and run setup again", name, want, replicaWait, name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func allCurrent(peers []*jetstream.PeerInfo) bool {
	for _, p := range peers {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

// ensureBlobs creates the Object Store of large payloads when it is missing; an existing one
// keeps its settings, its replicas changed when replicas says so.
func ensureBlobs(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, rep *Report) error {
	cfg := jetstream.ObjectStoreConfig{Bucket: bucket, Description: "jetflow large payloads, by run and SHA-256", Storage: jetstream.FileStorage, Replicas: max(replicas, 1)}
	obs, err := js.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateObjectStore(ctx, cfg); err != nil {
			return fmt.Errorf("create object store %s: %w", bucket, err)
		}
		rep.add("object store %s: created", bucket)
		return nil
	}
	if err != nil {
		return fmt.Errorf("object store %s: %w", bucket, err)
	}
	if replicas > 0 {
		st, err := obs.Status(ctx)
		if err != nil {
			return fmt.Errorf("object store %s: %w", bucket, err)
		}
		if st.Replicas() != replicas {
			if _, err := js.UpdateObjectStore(ctx, cfg); err != nil {
				return fmt.Errorf("update object store %s: %w", bucket, err)
			}
		}
	}
	rep.add("object store %s: up to date", bucket)
	return nil
}

func singleReplica(replicas int) bool { return replicas <= 1 }
func always(int) bool                 { return true }
func never(int) bool                  { return false }

// markersSupported reports whether the server can expire markers (JetStream API level 1,
// nats-server 2.11).
func markersSupported(ctx context.Context, js jetstream.JetStream) bool {
	info, err := js.AccountInfo(ctx)
	return err == nil && info.API.Level >= 1
}

// ensureBucket creates a KV bucket, or updates the stream behind an existing one without
// going through the KV API (which would turn direct gets back on). A marker TTL is given
// to a bucket that has none; one an operator set is kept.
func ensureBucket(ctx context.Context, js jetstream.JetStream, kc jetstream.KeyValueConfig, directFor func(replicas int) bool, rep *Report) error {
	stream := "KV_" + kc.Bucket
	s, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		kc.Replicas = cmp.Or(kc.Replicas, 1)
		if _, err := js.CreateKeyValue(ctx, kc); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("create bucket %s: %w", kc.Bucket, err)
		}
		if s, err = js.Stream(ctx, stream); err != nil {
			return fmt.Errorf("bucket %s: %w", kc.Bucket, err)
		}
		rep.add("bucket %s: created", kc.Bucket)
	case err != nil:
		return fmt.Errorf("bucket %s: %w", kc.Bucket, err)
	default:
		rep.add("bucket %s: up to date", kc.Bucket)
	}
	sc := s.CachedInfo().Config
	want := cmp.Or(kc.Replicas, sc.Replicas)
	direct := directFor(want)
	markers := kc.LimitMarkerTTL > 0 && sc.SubjectDeleteMarkerTTL == 0
	if sc.AllowDirect == direct && sc.Replicas == want && !markers {
		return nil
	}
	sc.AllowDirect = direct
	sc.Replicas = want
	if markers {
		sc.AllowMsgTTL = true
		sc.SubjectDeleteMarkerTTL = kc.LimitMarkerTTL
		rep.add("bucket %s: purge markers now expire after %s", kc.Bucket, kc.LimitMarkerTTL)
	}
	was := s.CachedInfo().Config.Replicas
	if _, err := js.UpdateStream(ctx, sc); err != nil {
		return fmt.Errorf("update bucket %s: %w", kc.Bucket, err)
	}
	if want != was {
		return waitReplicas(ctx, js, sc.Name, want)
	}
	return nil
}

// EnsureConsumer creates the durable consumer of a node type. An existing one is updated only
// when update is true (setup); a worker passes false and never changes a consumer it finds.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, n workflow.Names, c ConsumerConfig, update bool, replicas int, rep *Report) error {
	c = c.WithDefaults()
	cc := jetstream.ConsumerConfig{
		Durable:       n.Consumer(c.Type),
		Description:   "jetflow steps of type " + c.Type,
		FilterSubject: n.StepFilter(c.Type),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      replicas,
	}
	if c.Type == workflow.StartConsumerType {
		// Start requests: a refused one goes to the DLQ at once, and a broker error is
		// retried for as long as it lasts, so no delivery count ends a start.
		cc.Description = "jetflow start requests"
		cc.FilterSubject = n.StartFilter()
		cc.MaxDeliver = -1
	}
	stream := n.StepsStream()
	cons, err := js.Consumer(ctx, stream, cc.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		if _, err := js.CreateConsumer(ctx, stream, cc); err != nil {
			if _, again := js.Consumer(ctx, stream, cc.Durable); again == nil {
				return nil // another worker created it first
			}
			return fmt.Errorf("create consumer %s: %w", cc.Durable, err)
		}
		if rep != nil {
			rep.add("consumer %s: created", cc.Durable)
		}
		return nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s is missing: run `jetflow setup` first", stream)
	case err != nil:
		return fmt.Errorf("consumer %s: %w", cc.Durable, err)
	}
	if !update {
		if rep != nil {
			rep.add("consumer %s: kept as it is (tune it with --type %s)", cc.Durable, c.Type)
		}
		return nil
	}
	cc.PauseUntil = cons.CachedInfo().Config.PauseUntil // setup never unpauses a consumer
	if _, err := js.UpdateConsumer(ctx, stream, cc); err != nil {
		return fmt.Errorf("update consumer %s: %w", cc.Durable, err)
	}
	if rep != nil {
		rep.add("consumer %s: up to date", cc.Durable)
	}
	return nil
}

// ApplyConcurrency gives each node type that a node of w caps with `concurrency:` that cap as
// its consumer's MaxAckPending: the cluster-wide count of its steps in flight. It creates a
// missing consumer (defaults otherwise) and changes nothing else of an existing one (not its
// pause). The type is shared by every workflow that uses it: the last workflow applied with
// a cap sets it. It reports one line per consumer it changed. With update false (a worker,
// which never changes a consumer it finds) it only creates missing consumers, and reports a
// cap that differs instead of setting it.
func ApplyConcurrency(ctx context.Context, js jetstream.JetStream, n workflow.Names, w *workflow.Workflow, update bool) ([]string, error) {
	caps := map[string]int{}
	for _, node := range w.Nodes {
		if node.Concurrency > 0 {
			caps[node.Type] = node.Concurrency
		}
	}
	var out []string
	for _, typ := range slices.Sorted(maps.Keys(caps)) {
		want := caps[typ]
		cons, err := js.Consumer(ctx, n.StepsStream(), n.Consumer(typ))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			rep := &Report{}
			if err := EnsureConsumer(ctx, js, n, ConsumerConfig{Type: typ, MaxAckPending: want}, false, 0, rep); err != nil {
				return out, err
			}
			if len(rep.Lines) > 0 {
				out = append(out, fmt.Sprintf("consumer %s: created with concurrency %d", n.Consumer(typ), want))
				continue
			}
			// Another process created it meanwhile: compare its cap like any other.
			cons, err = js.Consumer(ctx, n.StepsStream(), n.Consumer(typ))
		}
		if err != nil {
			return out, fmt.Errorf("consumer %s: %w", n.Consumer(typ), err)
		}
		cc := cons.CachedInfo().Config
		if cc.MaxAckPending == want {
			continue
		}
		was := cc.MaxAckPending
		if !update {
			out = append(out, fmt.Sprintf("consumer %s: concurrency %d, the workflow asks for %d (a worker changes no consumer: run `jetflow workflows apply`)", n.Consumer(typ), was, want))
			continue
		}
		cc.MaxAckPending = want
		if _, err := js.UpdateConsumer(ctx, n.StepsStream(), cc); err != nil {
			return out, fmt.Errorf("consumer %s: set concurrency %d: %w", n.Consumer(typ), want, err)
		}
		out = append(out, fmt.Sprintf("consumer %s: concurrency %d (was %d)", n.Consumer(typ), want, was))
	}
	return out, nil
}

// TriggerAckWait is the ack wait of a trigger's consumer: a start takes a publish or two.
const TriggerAckWait = 30 * time.Second

// ApplyTrigger makes the trigger consumers match w: it creates the consumer of w.On on its
// stream (delivering the messages that arrive from now on) and removes the one of prev (the
// definition w replaces, nil when none) when w has no trigger or names another stream or
// filter. It says what it did.
func ApplyTrigger(ctx context.Context, js jetstream.JetStream, n workflow.Names, prev, w *workflow.Workflow) ([]string, error) {
	var out []string
	name := n.TriggerConsumer(w.Name)
	if prev != nil && prev.On != nil && (w.On == nil || *w.On != *prev.On) {
		err := js.DeleteConsumer(ctx, prev.On.Stream, name)
		switch {
		case err == nil:
			out = append(out, fmt.Sprintf("trigger on stream %s removed (consumer %s)", prev.On.Stream, name))
		case !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound):
			return out, fmt.Errorf("remove trigger consumer %s on stream %s: %w", name, prev.On.Stream, err)
		}
	}
	if w.On == nil {
		return out, nil
	}
	if _, err := js.Stream(ctx, w.On.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return out, fmt.Errorf("on.stream %s: no such stream: create it first (the trigger reads an existing stream)", w.On.Stream)
		}
		return out, fmt.Errorf("on.stream %s: %w", w.On.Stream, err)
	}
	if _, err := js.Consumer(ctx, w.On.Stream, name); err == nil {
		return out, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return out, fmt.Errorf("trigger consumer %s: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable: name, Description: "jetflow: starts a run of " + w.Name + " per message",
		DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: TriggerAckWait, MaxDeliver: -1, FilterSubject: w.On.Subject, MaxAckPending: 1000,
	}
	if _, err := js.CreateConsumer(ctx, w.On.Stream, cfg); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return out, fmt.Errorf("create trigger consumer %s on stream %s: %w", name, w.On.Stream, err)
	}
	what := "every message"
	if w.On.Subject != "" {
		what = "each message on " + w.On.Subject
	}
	return append(out, fmt.Sprintf("trigger: %s of stream %s starts a run (consumer %s)", what, w.On.Stream, name)), nil
}
