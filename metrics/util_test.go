package metrics_test

import (
	"runtime"
	"strconv"
)

func goVersion() string { return runtime.Version() }

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
