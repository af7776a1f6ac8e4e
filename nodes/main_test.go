package nodes_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a service instance of TestServiceFleet.
	if name := os.Getenv(fleetServiceEnv); name != "" {
		os.Exit(fleetService(name))
	}
	goleak.VerifyTestMain(m)
}
