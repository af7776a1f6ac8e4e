package checkpoint

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow-dev/jetflow/internal/kvwatch"
	"github.com/jetflow-dev/jetflow/workflow"
)

// ScheduleKeyPrefix starts the keys of schedules in the workflows bucket.
const ScheduleKeyPrefix = "schedule."

// Schedule is a schedule as `jetflow schedules add` recorded it.
type Schedule struct {
	// Name names it; its runs are <name>-<unix seconds>.
	Name string `json:"name"`
	// Workflow is what each fire starts, with Input.
	Workflow string            `json:"workflow"`
	Input    json.RawMessage   `json:"input,omitempty"`
	Every    workflow.Duration `json:"every,omitempty"`
	// Cron is the cron expression (6 fields) and TZ its time zone, when not Every.
	Cron string `json:"cron,omitempty"`
	TZ   string `json:"tz,omitempty"`
	// Paused says its message schedule was taken away until `schedules resume`.
	Paused bool `json:"paused,omitempty"`
	// Created is when it was added (or last resumed): @every fires count from it.
	Created time.Time `json:"created"`
}

// Spec is the schedule as people write it: "@every 1h0m0s" or "cron 0 0 9 * * 1-5 (Europe/Paris)".
func (s *Schedule) Spec() string {
	if s.Every > 0 {
		return "@every " + s.Every.D().String()
	}
	spec := "cron " + s.Cron
	if s.TZ != "" {
		spec += " (" + s.TZ + ")"
	}
	return spec
}

// Pattern is the schedule's Nats-Schedule header.
func (s *Schedule) Pattern() string {
	if s.Every > 0 {
		return "@every " + s.Every.D().String()
	}
	return s.Cron
}

// NextFire is when the schedule fires next after t (zero when paused or unknown).
func (s *Schedule) NextFire(t time.Time) time.Time {
	if s.Paused {
		return time.Time{}
	}
	if s.Every > 0 {
		d := s.Every.D()
		first := s.Created.Round(time.Second).Add(d)
		if t.Before(first) {
			return first
		}
		n := t.Sub(first)/d + 1
		return first.Add(n * d)
	}
	c, _, err := workflow.ParseCron(s.Cron, s.TZ)
	if err != nil {
		return time.Time{}
	}
	return c.Next(t).UTC()
}

// ErrScheduleExists is returned by AddSchedule for a name taken.
var ErrScheduleExists = errors.New("a schedule of that name exists")

// AddSchedule records s; ErrScheduleExists when the name is taken.
func (s *Store) AddSchedule(ctx context.Context, sc *Schedule) error {
	_, err := put(ctx, s.wfs, ScheduleKeyPrefix+sc.Name, sc, 0)
	if errors.Is(err, ErrConflict) {
		return ErrScheduleExists
	}
	return err
}

// ReadSchedule reads schedule name and its revision; ErrNotFound when there is none.
func (s *Store) ReadSchedule(ctx context.Context, name string) (*Schedule, uint64, error) {
	var sc Schedule
	rev, err := get(ctx, s.wfs, ScheduleKeyPrefix+name, &sc)
	if err != nil {
		return nil, 0, err
	}
	return &sc, rev, nil
}

// UpdateSchedule writes sc at revision rev (ErrConflict when it changed since).
func (s *Store) UpdateSchedule(ctx context.Context, sc *Schedule, rev uint64) error {
	_, err := put(ctx, s.wfs, ScheduleKeyPrefix+sc.Name, sc, rev)
	return err
}

// DeleteSchedule removes schedule name's record.
func (s *Store) DeleteSchedule(ctx context.Context, name string) error {
	return s.wfs.Purge(ctx, ScheduleKeyPrefix+name)
}

// Schedules lists every schedule, by name.
func (s *Store) Schedules(ctx context.Context) ([]*Schedule, error) {
	var out []*Schedule
	err := kvwatch.Scan(ctx, s.wfs, []string{ScheduleKeyPrefix + ">"}, func(e jetstream.KeyValueEntry) error {
		var sc Schedule
		if err := json.Unmarshal(e.Value(), &sc); err == nil && strings.HasPrefix(e.Key(), ScheduleKeyPrefix) {
			out = append(out, &sc)
		}
		return nil
	})
	return out, err
}
