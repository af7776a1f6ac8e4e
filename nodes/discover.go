package nodes

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// DiscoverServices asks every NATS service the connection can reach for its stats (the
// services protocol's $SRV.STATS) and returns the replies that came within wait: one per
// service instance, each with its endpoints, their subjects and request and error counts.
func DiscoverServices(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]micro.Stats, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, "", "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []micro.Stats
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-timer.C:
			return out, nil
		case m := <-msgs:
			var st micro.Stats
			if json.Unmarshal(m.Data, &st) == nil && st.Name != "" {
				out = append(out, st)
			}
		}
	}
}

// Serves reports whether one of stats has an endpoint on subject.
func Serves(stats []micro.Stats, subject string) bool {
	for _, st := range stats {
		for _, ep := range st.Endpoints {
			if ep.Subject == subject {
				return true
			}
		}
	}
	return false
}
