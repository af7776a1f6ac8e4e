//go:build chaosquick && linux

package chaos

import "testing"

// TestChaosEveryScenarioQuick (build tag chaosquick; CI runs it) is every scenario of the
// table (scenarios_test.go) at its quick size: a few runs and a fault or two each, on the
// broker the scenario needs (scenario 6's three-node cluster included), so a scenario added to
// the table is run by CI without further wiring.
func TestChaosEveryScenarioQuick(t *testing.T) {
	runScenarios(t, func(sc scenario) size { return sc.quick })
}
