#!/bin/bash
# Benchmark of issues 4/5: `fs cat` of a 4 GiB thin flat VMDK (half allocated) through the
# reader, vs vmfs-fuse/vmfs6-fuse + cat (fresh mount each run), vs dd of the same allocated
# bytes. The image's page cache is dropped before every run. Usage: cat_vs_fuse.sh WORKDIR [RUNS]
# Needs target/release/mkvmfs and target/release/examples/vmfs_cat, root, vmfs-tools and
# vmfs6-tools.
set -euo pipefail
work=${1:?workdir}; runs=${2:-3}
root=$(cd "$(dirname "$0")/../../.." && pwd)
mkvmfs=${MKVMFS:-$root/target/release/mkvmfs}
cat_bin=$root/target/release/examples/vmfs_cat
mkdir -p "$work/src/vm"
f=$work/src/vm/disk-flat.vmdk
if [ ! -s "$f" ]; then
  truncate -s 4G "$f"
  head -c $((64 << 20)) /dev/urandom > "$work/chunk"
  for i in $(seq 0 2 63); do dd if="$work/chunk" of="$f" bs=64M seek=$i count=1 conv=notrunc status=none; done
fi
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
# Drop only this image's pages (posix_fadvise DONTNEED), not the whole machine's cache.
drop() { dd if="$img" iflag=nocache count=0 status=none; }
for v in 5 6; do
  img=$work/img$v.bin
  [ -s "$img" ] || "$mkvmfs" --vmfs $v "$work/src" "$img"
  fuse=vmfs-fuse; [ $v = 6 ] && fuse=vmfs6-fuse
  mnt=$(mktemp -d)
  mapfile -t ext < <(VMFS_CAT_EXTENTS=1 "$cat_bin" "$img" /vm/disk-flat.vmdk)
  ddrun() { for e in "${ext[@]}"; do set -- $e; dd if="$img" of=/dev/null bs=8M iflag=skip_bytes,count_bytes skip=$1 count=$2 status=none; done; }
  fuserun() { $fuse "$img" "$mnt" >/dev/null 2>&1; cat "$mnt/vm/disk-flat.vmdk"; umount "$mnt"; }
  for r in $(seq "$runs"); do
    drop; a=$(t "$cat_bin" "$img" /vm/disk-flat.vmdk)
    drop; b=$(t fuserun)
    drop; c=$(t ddrun)
    echo "vmfs$v run $r: reader ${a}s  $fuse+cat ${b}s  dd(allocated) ${c}s  speedup-vs-fuse $(echo "scale=2; $b / $a" | bc)x  vs-dd $(echo "scale=2; $c / $a" | bc)x"
  done
  rmdir "$mnt"
done
