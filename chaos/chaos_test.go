//go:build chaos && linux

package chaos

import (
	"testing"
	"time"
)

// TestChaos is the long suite (build tag chaos): the eight scenarios at size. Each checks
// the promise and logs its report; CHAOS_REPORT=FILE also appends each report there as JSON.
func TestChaos(t *testing.T) {
	within := 4 * time.Minute
	t.Run("1-worker-kill", func(t *testing.T) {
		scenarioWorkerKill(t, size{runs: 120, workers: 4, faults: 20, gap: 150 * time.Millisecond, within: within})
	})
	t.Run("2-zombie", func(t *testing.T) {
		scenarioZombie(t, size{runs: 60, workers: 3, faults: 4, gap: 400 * time.Millisecond, within: within})
	})
	t.Run("3-hang", func(t *testing.T) {
		scenarioHang(t, size{runs: 20, workers: 3, gap: 200 * time.Millisecond, within: within})
	})
	t.Run("4-poison", func(t *testing.T) {
		scenarioPoison(t, size{runs: 60, workers: 3, faults: 3, gap: 150 * time.Millisecond, within: within})
	})
	t.Run("5-server-kill", func(t *testing.T) {
		scenarioServerKill(t, size{runs: 80, workers: 3, faults: 3, gap: 200 * time.Millisecond, within: within})
	})
	t.Run("6-leader-kill", func(t *testing.T) {
		scenarioLeaderKill(t, size{runs: 80, workers: 3, faults: 2, gap: 200 * time.Millisecond, within: within})
	})
	t.Run("7-flaky", func(t *testing.T) {
		scenarioFlaky(t, size{runs: 100, workers: 3, gap: 100 * time.Millisecond, within: within})
	})
	t.Run("8-duplicates", func(t *testing.T) {
		scenarioDuplicates(t, size{runs: 60, workers: 3, faults: 200, gap: 150 * time.Millisecond, within: within})
	})
}
