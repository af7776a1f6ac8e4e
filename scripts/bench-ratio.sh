#!/usr/bin/env bash
# bench-ratio.sh [PAIRS] [BASELINE] — jetflow's step throughput against the hand-written
# pipeline (BenchmarkBaseline/BASELINE: minimal or jetflow-bytes), measured in alternating
# pairs: engine, baseline, engine, baseline... A shared machine's speed drifts by tens of
# percent within minutes, so each engine run is compared with the baseline run beside it and
# the median of the pair ratios is the figure (BENCHMARKS.md).
set -euo pipefail
pairs=${1:-8}
baseline=${2:-minimal}
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/consumer.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" ./consumer
# metrics prints "steps/s cpu-µs/step" of one benchmark run.
metrics() {
	"$bin" -test.run '^$' -test.bench "$1" -test.benchtime 1x |
		awk '/^Benchmark/ { for (i = 1; i <= NF; i++) { if ($i == "steps/s") s = $(i-1); if ($i == "cpu-µs/step") c = $(i-1) } } END { print s, c }'
}
ratios=()
for i in $(seq "$pairs"); do
	read -r es ec < <(metrics 'Engine$')
	read -r bs bc < <(metrics "Baseline/$baseline\$")
	r=$(awk -v e="$es" -v b="$bs" 'BEGIN { printf "%.3f", e / b }')
	ratios+=("$r")
	printf 'pair %2d: jetflow %6.0f steps/s (%5.1f CPU µs/step)   baseline %-13s %6.0f steps/s (%5.1f CPU µs/step)   ratio %s\n' \
		"$i" "$es" "$ec" "$baseline" "$bs" "$bc" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "median ratio over %d pairs: %.3f (min %s, max %s)\n", NR, m, a[1], a[NR] }'
