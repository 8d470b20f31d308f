#!/usr/bin/env bash
# Benchmark: reading 1 GiB through lun's ReadAt (buffered and O_DIRECT) against dd bs=4M of the
# same bytes, in the same run, cold and warm. Prints a table of median MB/s and the ratio to dd.
#
#   tests/bench/lun-read.sh [REPS]          (default 5 repetitions per case)
#   LUN_BENCH_FILE=/path/on/disk.img tests/bench/lun-read.sh
#
# "Cold" drops only the test file's pages from the page cache (dd iflag=nocache count=0, which
# calls posix_fadvise DONTNEED), so the machine's other work keeps its cache. Runs of dd and
# lun_read alternate (and alternate which goes first), so that drift in machine load and any
# cache below the guest (a VM host's) hit both sides alike.
set -euo pipefail
cd "$(dirname "$0")/../.."

reps=${1:-5}
file=${LUN_BENCH_FILE:-target/bench/lun-read-1g.img}
size=$((1 << 30))

mkdir -p "$(dirname "$file")"
fstype=$(stat -f -c %T "$(dirname "$file")")
if [ "$fstype" = tmpfs ] || [ "$fstype" = ramfs ]; then
  echo "lun-read.sh: $file is on $fstype; put it on a disk (LUN_BENCH_FILE=...)" >&2
  exit 1
fi
# A real, non-sparse file: every block allocated, filled with incompressible bytes.
if [ ! -f "$file" ] || [ "$(stat -c %s "$file")" != "$size" ] ||
   [ "$(( $(stat -c %b "$file") * $(stat -c %B "$file") ))" -lt "$size" ]; then
  echo "creating $file (1 GiB of random bytes)" >&2
  dd if=/dev/urandom of="$file.partial" bs=4M count=256 iflag=fullblock status=none
  sync "$file.partial"
  mv "$file.partial" "$file"
fi

cargo build --release -q -p lun --example lun_read
bin=target/release/examples/lun_read

drop_file_cache() { dd if="$file" iflag=nocache count=0 status=none; }
warm_file_cache() { cat "$file" >/dev/null; }
now() { date +%s.%N; }

# run CASE CACHE: prints MB/s of one run.
run() {
  local what=$1 cache=$2 t0 t1
  if [ "$cache" = cold ]; then drop_file_cache; else warm_file_cache; fi
  t0=$(now)
  case $what in
    dd) dd if="$file" of=/dev/null bs=4M status=none ;;
    dd-direct) dd if="$file" of=/dev/null bs=4M iflag=direct status=none ;;
    readat) "$bin" "$file" >/dev/null ;;
    readat-direct) "$bin" "$file" --direct >/dev/null ;;
  esac
  t1=$(now)
  awk -v s="$size" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", s / (b - a) / 1e6 }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

declare -A results
for cache in cold warm; do
  for pair in "dd readat" "dd-direct readat-direct"; do
    read -r ref ours <<<"$pair"
    for ((i = 0; i < reps; i++)); do
      # Alternate which side goes first: a cache below this machine (a VM host's) may still
      # hold what the previous run read, and that must not favour one side.
      if ((i % 2)); then
        results[$ours/$cache]+="$(run "$ours" "$cache") "
        results[$ref/$cache]+="$(run "$ref" "$cache") "
      else
        results[$ref/$cache]+="$(run "$ref" "$cache") "
        results[$ours/$cache]+="$(run "$ours" "$cache") "
      fi
    done
  done
done

printf '\n1 GiB file %s (%s), %d runs per case, median MB/s (all runs)\n' "$file" "$fstype" "$reps"
printf '"vs dd" is the ratio of medians; "paired" is the median of per-round ratios (each run of\n'
printf 'ours against the dd run beside it), which cancels slow drift in machine load.\n\n'
printf '| %-28s | %-5s | %8s | %-40s | %6s | %6s |\n' case cache MB/s runs "vs dd" paired
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------------------ ------- ---------- ------------------------------------------ -------- --------
for cache in cold warm; do
  for pair in "dd readat" "dd-direct readat-direct"; do
    read -r ref ours <<<"$pair"
    ref_med=$(tr ' ' '\n' <<<"${results[$ref/$cache]}" | grep . | median)
    for what in "$ref" "$ours"; do
      med=$(tr ' ' '\n' <<<"${results[$what/$cache]}" | grep . | median)
      case $what in
        dd) label="dd bs=4M" ;;
        dd-direct) label="dd bs=4M iflag=direct" ;;
        readat) label="ReadAt buffered (lun_read)" ;;
        readat-direct) label="ReadAt O_DIRECT (lun_read)" ;;
      esac
      ratio=$(awk -v a="$med" -v b="$ref_med" 'BEGIN { printf "%.2fx", a / b }')
      paired=$(paste <(tr ' ' '\n' <<<"${results[$what/$cache]}" | grep .) \
                     <(tr ' ' '\n' <<<"${results[$ref/$cache]}" | grep .) |
               awk '{ printf "%.4f\n", $1 / $2 }' | sort -n |
               awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2fx", m }')
      printf '| %-28s | %-5s | %8s | %-40s | %6s | %6s |\n' "$label" "$cache" "$med" "${results[$what/$cache]% }" "$ratio" "$paired"
    done
  done
done
