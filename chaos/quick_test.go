//go:build linux

package chaos

import (
	"testing"
	"time"
)

// TestChaosQuick is the bounded variant CI runs (no build tag): scenarios 1, 4, 7 and 8 —
// worker SIGKILLs, a poison step, 20 % injected failures, duplicate publishes — with few
// runs on one nats-server. Each scenario checks the promise and logs its report.
func TestChaosQuick(t *testing.T) {
	within := 90 * time.Second
	t.Run("worker-kill", func(t *testing.T) {
		scenarioWorkerKill(t, size{runs: 20, workers: 3, faults: 5, gap: 150 * time.Millisecond, within: within})
	})
	t.Run("poison", func(t *testing.T) {
		scenarioPoison(t, size{runs: 12, workers: 3, faults: 1, gap: 150 * time.Millisecond, within: within})
	})
	t.Run("flaky", func(t *testing.T) {
		scenarioFlaky(t, size{runs: 20, workers: 3, gap: 100 * time.Millisecond, within: within})
	})
	t.Run("duplicates", func(t *testing.T) {
		scenarioDuplicates(t, size{runs: 12, workers: 3, faults: 40, gap: 150 * time.Millisecond, within: within})
	})
}
