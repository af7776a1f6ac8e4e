//go:build chaos && linux

package chaos

import "testing"

// TestChaos is the long suite (build tag chaos): every scenario of the table (scenarios_test.go)
// at its full size. Each checks the promise and logs its report; CHAOS_REPORT=FILE also appends
// each report there as JSON.
func TestChaos(t *testing.T) {
	runScenarios(t, func(sc scenario) size { return sc.full })
}
