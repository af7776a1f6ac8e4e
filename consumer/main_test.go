package consumer

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a worker process for the tests that SIGKILL one.
	if mode := os.Getenv(subprocessEnv); mode != "" {
		os.Exit(subprocessWorker(mode))
	}
	// ... and as the long-step worker of TestLongStepsNeverOverlapAcrossAKill.
	if os.Getenv(longStepWorkerEnv) != "" {
		os.Exit(longStepWorker())
	}
	goleak.VerifyTestMain(m)
}
