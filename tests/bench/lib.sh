# Shared helpers for the hand-run benchmarks in tests/bench/ (sourced, not executed).
# Timings use the wall clock in nanoseconds; statistics are computed with awk so the scripts need
# nothing beyond coreutils, awk and jq.

# Fails early with a clear message when a tool the benchmark compares against is missing.
bench_need() {
  local tool missing=()
  for tool in "$@"; do
    PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "error: missing tools: ${missing[*]}" >&2
    exit 1
  fi
}

bench_need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: run as root (drop_caches, FUSE mounts, loop devices)" >&2
    exit 1
  fi
}

bench_now_ns() { date +%s%N; }

# Cold cache for every tool alike: flush dirty pages, then drop page cache, dentries and inodes.
bench_drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

# Prints "median min max" of the numbers given as arguments.
bench_stats() {
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "nan nan nan"; exit }
      if (NR % 2) med = v[(NR + 1) / 2]; else med = (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.3f %.3f %.3f\n", med, v[1], v[NR]
    }'
}

# Prints the host the numbers were taken on, for the benchmark record.
bench_machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  echo "machine: $(nproc) cores ($cpu), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Peak resident set size (KiB) of a command, from GNU time's verbose report.
# Usage: bench_peak_rss_kib CMD... (the command's stdout goes to /dev/null).
bench_peak_rss_kib() {
  local report
  report=$(/usr/bin/time -v "$@" 2>&1 >/dev/null)
  awk -F': ' '/Maximum resident set size/ { print $2 }' <<<"$report"
}

# cargo build --release of the given packages. The tree is shared and another crate may be broken
# mid-edit: with BENCH_ALLOW_STALE=1 a failed build falls back to the binaries already in
# target/release (loudly), otherwise it stops the benchmark. BENCH_NO_BUILD=1 skips the build.
bench_build() {
  if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    echo "BENCH_NO_BUILD=1: measuring the binaries already in target/release" >&2
    return 0
  fi
  if cargo build --release -q "$@"; then return 0; fi
  if [ "${BENCH_ALLOW_STALE:-0}" = 1 ]; then
    echo "WARNING: cargo build failed; measuring the binaries already in target/release" >&2
    ls -l --time-style='+%F %T' target/release/lunproxy target/release/mkvmfs >&2 || true
    return 0
  fi
  echo "error: cargo build failed (set BENCH_ALLOW_STALE=1 to measure the existing binaries)" >&2
  exit 1
}
