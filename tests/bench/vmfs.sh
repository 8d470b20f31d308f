#!/usr/bin/env bash
# Benchmark (issues 4 and 5): stream a 4 GiB thin flat VMDK, half allocated, out of a VMFS5 and a
# VMFS6 image, with three tools side by side in one run:
#   lunproxy   `lunproxy fs cat IMG PATH`
#   fuse       `vmfs-fuse IMG MNT && cat MNT/PATH` (vmfs6-fuse on VMFS6), mounted fresh every run,
#              so the FUSE cache is always cold; the mount is inside the timed command
#   dd         dd of exactly the allocated byte ranges (from `lunproxy fs extents --json`, ranges
#              contiguous on the LUN merged), bs=4M
# each writing to /dev/null ("devnull") and through a pipe into `cat >/dev/null` ("pipe"), with a
# cold page cache (sync; drop_caches before every run, for every tool) and a warm one.
# Goals: lunproxy >= 3x faster than the FUSE reader, >= 0.9x of dd. Also checks that the bytes
# are identical (sha256: lunproxy = FUSE reader = source file) and that lunproxy's peak RSS does
# not grow with the file size (1 GiB vs 4 GiB file).
#
# Run by hand as root, never in CI:  tests/bench/vmfs.sh
# Environment: REPS (default 3), VERSIONS (default "5 6"), MODES (default "cold warm"),
#              SINKS (default "devnull pipe").
# Inputs are generated under target/bench/vmfs/ (the sparse source tree is kept between runs;
# the images are rebuilt when mkvmfs changed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

REPS=${REPS:-3}
VERSIONS=${VERSIONS:-"5 6"}
MODES=${MODES:-"cold warm"}
SINKS=${SINKS:-"devnull pipe"}
MIB=$((1 << 20))
BIG_PATH=/bench-vm/bench-vm-flat.vmdk
SMALL_PATH=/small-vm/small-vm-flat.vmdk

bench_need_root
bench_need vmfs-fuse vmfs6-fuse jq dd sha256sum /usr/bin/time mountpoint

bench_build -p lunproxy -p mkvmfs
W=$ROOT/target/bench/vmfs
mkdir -p "$W/bin"
# Private copies: others rebuilding target/release mid-run must not swap the binaries under us.
cp -p target/release/lunproxy target/release/mkvmfs "$W/bin/"
LUNPROXY=$W/bin/lunproxy
MKVMFS=$W/bin/mkvmfs
MNT=$(mktemp -d /tmp/lunproxy-bench-vmfs.XXXXXX)
cleanup() {
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  rmdir "$MNT" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A thin file of SIZE bytes: 64 MiB of random data, 64 MiB hole, repeated; sparse on the host.
make_half_allocated() {
  local file=$1 size=$2 period=$((128 * MIB)) off=0
  rm -f "$file"
  truncate -s "$size" "$file"
  while ((off < size)); do
    dd if=/dev/urandom of="$file" bs=4M count=16 seek=$((off / (4 * MIB))) \
      conv=notrunc iflag=fullblock status=none
    off=$((off + period))
  done
}

SRC=$W/src
if [ ! -e "$SRC/.complete" ]; then
  echo "generating the sparse source tree under $SRC ..."
  rm -rf "$SRC"
  mkdir -p "$SRC/bench-vm" "$SRC/small-vm"
  make_half_allocated "$SRC$BIG_PATH" $((4096 * MIB))
  make_half_allocated "$SRC$SMALL_PATH" $((1024 * MIB))
  sha256sum "$SRC$BIG_PATH" | cut -d' ' -f1 >"$SRC/.big.sha256"
  sha256sum "$SRC$SMALL_PATH" | cut -d' ' -f1 >"$SRC/.small.sha256"
  touch "$SRC/.complete"
fi
SRC_SHA=$(cat "$SRC/.big.sha256")
BIG_SIZE=$(stat -c %s "$SRC$BIG_PATH")

fuse_tool() { if [ "$1" = 5 ]; then echo vmfs-fuse; else echo vmfs6-fuse; fi; }

# Byte ranges "physical length" of the file's data extents, neighbours on the LUN merged.
data_ranges() {
  "$LUNPROXY" fs extents "$1" "$2" --json |
    jq -r '.extents[] | select(.physical != null) | "\(.physical) \(.length)"' |
    awk '
      { if (n && $1 == start + len) { len += $2 } else { if (n) out(); start = $1; len = $2; n++ } }
      END { if (n) out() }
      # printf, not print: mawk prints integers past 2^31 in %g notation.
      function out() { printf "%.0f %.0f\n", start, len }'
}

# The three readers. Each writes the file's bytes (dd: its allocated bytes) to stdout.
run_lunproxy() { "$LUNPROXY" fs cat "$IMG" "$BIG_PATH"; }
run_fuse() {
  "$FUSE" "$IMG" "$MNT" >/dev/null
  cat "$MNT$BIG_PATH"
}
run_dd() {
  local phys len
  while read -r phys len; do
    dd if="$IMG" bs=4M iflag=skip_bytes,count_bytes skip="$phys" count="$len" status=none
  done <"$RANGES"
}
unmount_if_mounted() { if mountpoint -q "$MNT"; then umount "$MNT"; fi; }

# Times one run of TOOL into SINK; prints seconds.
time_run() {
  local tool=$1 sink=$2 t0 t1
  t0=$(bench_now_ns)
  if [ "$sink" = devnull ]; then
    "run_$tool" >/dev/null
  else
    "run_$tool" | cat >/dev/null
  fi
  t1=$(bench_now_ns)
  unmount_if_mounted
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

RESULTS=$W/results.txt
: >"$RESULTS"
RSS_LINES=()
VERIFY_LINES=()

for v in $VERSIONS; do
  IMG=$W/vmfs$v.img
  FUSE=$(fuse_tool "$v")
  if [ ! -e "$IMG" ] || [ "$MKVMFS" -nt "$IMG" ] || [ "$SRC/.complete" -nt "$IMG" ]; then
    echo "building $IMG with mkvmfs --vmfs $v ..."
    rm -f "$IMG"
    "$MKVMFS" --vmfs "$v" --label "bench$v" "$SRC" "$IMG"
  fi
  RANGES=$W/vmfs$v.ranges
  data_ranges "$IMG" "$BIG_PATH" >"$RANGES"
  ALLOC=$(awk '{ s += $2 } END { printf "%.0f\n", s }' "$RANGES")
  echo "VMFS$v: $BIG_PATH size $BIG_SIZE, allocated $ALLOC in $(wc -l <"$RANGES") runs on the LUN"

  # Same bytes from every reader, and the same as the source file.
  lp_sha=$(run_lunproxy | sha256sum | cut -d' ' -f1)
  fuse_sha=$(run_fuse | sha256sum | cut -d' ' -f1)
  unmount_if_mounted
  if [ "$lp_sha" = "$SRC_SHA" ] && [ "$fuse_sha" = "$SRC_SHA" ]; then
    VERIFY_LINES+=("VMFS$v: sha256 identical (lunproxy = $FUSE = source) $SRC_SHA")
  else
    VERIFY_LINES+=("VMFS$v: sha256 MISMATCH source=$SRC_SHA lunproxy=$lp_sha $FUSE=$fuse_sha")
  fi
  echo "${VERIFY_LINES[-1]}"

  # Peak RSS must not follow the file size.
  rss_small=$(bench_peak_rss_kib "$LUNPROXY" fs cat "$IMG" "$SMALL_PATH")
  rss_big=$(bench_peak_rss_kib "$LUNPROXY" fs cat "$IMG" "$BIG_PATH")
  RSS_LINES+=("VMFS$v: lunproxy fs cat peak RSS: 1 GiB file ${rss_small} KiB, 4 GiB file ${rss_big} KiB")
  echo "${RSS_LINES[-1]}"

  for mode in $MODES; do
    for sink in $SINKS; do
      if [ "$mode" = warm ]; then
        # Fill the page cache with the image's data before the first timed warm run.
        for tool in lunproxy fuse dd; do time_run "$tool" devnull >/dev/null; done
      fi
      for ((rep = 1; rep <= REPS; rep++)); do
        # Tools interleaved, so drift on the shared machine hits them alike.
        for tool in lunproxy fuse dd; do
          if [ "$mode" = cold ]; then bench_drop_caches; fi
          s=$(time_run "$tool" "$sink")
          echo "VMFS$v $mode $sink $tool $s" | tee -a "$RESULTS"
        done
      done
    done
  done
done

echo
bench_machine
echo "file: 4 GiB thin flat VMDK, 64 MiB data / 64 MiB hole alternating, $REPS runs each"
echo "MB/s = file size (dd: allocated bytes) / median time; allocated MB/s = allocated bytes / median time"
echo "ratios: vs FUSE = t(FUSE) / t(lunproxy), goal >= 3; vs dd = t(dd) / t(lunproxy), goal >= 0.9"
echo
row() { printf '| %-6s | %-5s | %-7s | %-14s | %8s | %8s | %6s | %10s | %-12s | %-12s |\n' "$@"; }
row fs cache sink tool "median s" "min s" "MB/s" "alloc MB/s" "vs FUSE" "vs dd"
row ------ ----- ------- -------------- -------- -------- ------ ---------- ------------ ------------
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", b / 1e6 / t }'; }
ratio() { awk -v a="$1" -v b="$2" -v g="$3" 'BEGIN { printf "%.2fx %s", a / b, (a / b >= g ? "met" : "MISSED") }'; }
for v in $VERSIONS; do
  alloc=$(awk '{ s += $2 } END { printf "%.0f\n", s }' "$W/vmfs$v.ranges")
  for mode in $MODES; do
    for sink in $SINKS; do
      declare -A med=() mn=()
      for tool in lunproxy fuse dd; do
        # shellcheck disable=SC2046
        read -r "med[$tool]" "mn[$tool]" _ <<<"$(bench_stats $(awk -v k="VMFS$v $mode $sink $tool" \
          '$1" "$2" "$3" "$4 == k { print $5 }' "$RESULTS"))"
      done
      lp=${med[lunproxy]}
      row "VMFS$v" "$mode" "$sink" lunproxy "$lp" "${mn[lunproxy]}" "$(mbps "$BIG_SIZE" "$lp")" \
        "$(mbps "$alloc" "$lp")" "$(ratio "${med[fuse]}" "$lp" 3)" "$(ratio "${med[dd]}" "$lp" 0.9)"
      row "VMFS$v" "$mode" "$sink" "$(fuse_tool "$v")+cat" "${med[fuse]}" "${mn[fuse]}" \
        "$(mbps "$BIG_SIZE" "${med[fuse]}")" "$(mbps "$alloc" "${med[fuse]}")" "" ""
      row "VMFS$v" "$mode" "$sink" "dd (alloc)" "${med[dd]}" "${mn[dd]}" \
        "$(mbps "$alloc" "${med[dd]}")" "$(mbps "$alloc" "${med[dd]}")" "" ""
      unset med mn
    done
  done
done
echo
printf '%s\n' "${VERIFY_LINES[@]}" "${RSS_LINES[@]}"
