#!/usr/bin/env bash
# NTFS reader benchmarks, run by hand (not in CI); numbers go to docs/benchmarks.md ("NTFS").
#
#   tests/bench/ntfs.sh            # needs root (ntfs-3g mounts build the images), hyperfine
#
# 1. `fs cat` of a 1 GiB file vs ntfscat and icat, same run, same sink (goal: >= 2x ntfscat)
# 2. `fs ls -r` of 10,000 files vs `fls -r`                           (goal: >= 5x fls)
# 3. peak RSS of `fs cat` of a 4 GiB file (1 GiB data, 3 GiB holes)   (goal: < 32 MiB)
#
# Uses `target/release/lunproxy fs …` when that binary has the `fs` command, otherwise the
# example fsparsers/ntfs/examples/ntfs_tool.rs (same reader, same trait calls). Images are built
# once by testkit::ntfs into target/fixtures/ntfs/ (bench10k, bench1g, bench4g; sparse on the host).
# Timings are with a warm page cache for every contender (hyperfine --warmup), so they compare
# CPU and I/O-path cost rather than the disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PATH:/sbin:/usr/sbin"
for t in hyperfine ntfscat icat fls /usr/bin/time python3; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install -y hyperfine sleuthkit ntfs-3g time)"; exit 1; }
done

cargo build --release -q -p ntfs --example ntfs_tool
TOOL=target/release/examples/ntfs_tool
if [ -x target/release/lunproxy ] && target/release/lunproxy fs --help >/dev/null 2>&1; then
  FS="target/release/lunproxy fs"
else
  FS="$TOOL"
fi
echo "reader under test: $FS"

IMG10K=$($TOOL fixture bench10k)
IMG1G=$($TOOL fixture bench1g)
IMG4G=$($TOOL fixture bench4g)
OUT=target/bench-ntfs
mkdir -p "$OUT"

inode_of() { # image, name at the root -> MFT record number (for icat)
  fls -p "$1" | awk -F'\t' -v n="$2" '$2==n { split($1, a, " "); sub(/-.*/, "", a[2]); print a[2] }'
}
INO=$(inode_of "$IMG1G" big.bin)

# Same bytes from all three, checked once before timing.
a=$($FS cat "$IMG1G" /big.bin | sha256sum | cut -d' ' -f1)
b=$(ntfscat "$IMG1G" big.bin | sha256sum | cut -d' ' -f1)
c=$(icat "$IMG1G" "$INO" | sha256sum | cut -d' ' -f1)
[ "$a" = "$b" ] && [ "$a" = "$c" ] || { echo "outputs differ: $a $b $c"; exit 1; }

echo "== cat 1 GiB"
hyperfine --warmup 1 --runs 5 --export-json "$OUT/cat.json" --export-markdown "$OUT/cat.md" \
  -n "fs cat" "$FS cat $IMG1G /big.bin | cat > /dev/null" \
  -n ntfscat "ntfscat $IMG1G big.bin | cat > /dev/null" \
  -n icat "icat $IMG1G $INO | cat > /dev/null"

echo "== ls -r of 10,000 files"
n1=$($FS ls "$IMG10K" / -r | wc -l); n2=$(fls -r -p "$IMG10K" | wc -l)
echo "entries: fs ls $n1, fls $n2"
hyperfine --warmup 2 --runs 10 --export-json "$OUT/ls.json" --export-markdown "$OUT/ls.md" \
  -n "fs ls -r" "$FS ls $IMG10K / -r | cat > /dev/null" \
  -n "fls -r" "fls -r -p $IMG10K | cat > /dev/null"

echo "== peak RSS, cat of a 4 GiB file"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {print $2}'; }
r_fs=$(rss $FS cat "$IMG4G" /big4g.bin)
r_nc=$(rss ntfscat "$IMG4G" big4g.bin)
echo "peak RSS KiB: fs cat $r_fs, ntfscat $r_nc"

python3 - "$OUT" "$r_fs" "$r_nc" <<'PY'
import json, sys
out, r_fs, r_nc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def means(name):
    return {r["command"]: r["mean"] for r in json.load(open(f"{out}/{name}.json"))["results"]}
cat, ls = means("cat"), means("ls")
gib = 1.0
print(f"cat 1 GiB: fs {cat['fs cat']:.3f}s ({gib/cat['fs cat']:.2f} GiB/s), "
      f"ntfscat {cat['ntfscat']:.3f}s, icat {cat['icat']:.3f}s; "
      f"speed-up vs ntfscat {cat['ntfscat']/cat['fs cat']:.2f}x (goal >= 2), "
      f"vs icat {cat['icat']/cat['fs cat']:.2f}x")
print(f"ls -r 10k: fs {ls['fs ls -r']*1000:.1f} ms, fls {ls['fls -r']*1000:.1f} ms; "
      f"speed-up {ls['fls -r']/ls['fs ls -r']:.2f}x (goal >= 5)")
print(f"peak RSS cat 4 GiB: fs {r_fs/1024:.1f} MiB (goal < 32), ntfscat {r_nc/1024:.1f} MiB")
PY
