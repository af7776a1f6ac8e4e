//go:build !unix

package bench

import "time"

// CPUTime is the CPU time this process has used so far; 0 where it is not known.
func CPUTime() time.Duration { return 0 }
