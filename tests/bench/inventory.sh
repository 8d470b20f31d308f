#!/usr/bin/env bash
# Benchmark (issue 6): inventory of a datastore with 1,000 VMs and 10,000 files.
#   NTFS image (mkntfs + ntfs-3g):  `lunproxy vms IMG --json`  vs  `fls -r IMG`  (sleuthkit)
#   VMFS5 and VMFS6 images (mkvmfs): `lunproxy vms IMG --json` alone (no peer tool lists VMFS
#   without mounting it)
# with a warm page cache and a cold one (sync; drop_caches before every run, for every tool).
# Goals: lunproxy < 0.5 s, and >= 5x faster than `fls -r` on the same NTFS image.
# Each VM folder, as ESXi lays it out: NAME.vmx, .nvram, .vmsd, .vmxf, two disks (descriptor
# NAME.vmdk / NAME_1.vmdk + thin, sparse -flat.vmdk extents), vmware.log, vmware-1.log:
# 10 files a VM.
#
# Run by hand as root, never in CI:  tests/bench/inventory.sh
# Environment: RUNS (hyperfine runs, default 10), ROUNDS (rounds they are split into, default 6),
# VMS (default 1000), FS (default "ntfs vmfs5 vmfs6").
# Inputs are generated under target/bench/inventory/ and kept between runs (the VMFS images
# are rebuilt when mkvmfs changed).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

RUNS=${RUNS:-10}
VMS=${VMS:-1000}
FS=${FS:-"ntfs vmfs5 vmfs6"}
GIB=$((1 << 30))

bench_need_root
bench_need mkntfs ntfs-3g fls jq hyperfine mountpoint

build=(-p lunproxy)
case " $FS " in *" vmfs"*) build+=(-p mkvmfs) ;; esac
bench_build "${build[@]}"
W=$ROOT/target/bench/inventory
mkdir -p "$W/bin"
# lunproxy as shipped: the `dist` profile (release with whole-program optimisation).
if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  cargo build --profile dist -q -p lunproxy
fi
# Private copies: others rebuilding target/ mid-run must not swap the binaries under us.
cp -p target/dist/lunproxy "$W/bin/"
[ -e target/release/mkvmfs ] && cp -p target/release/mkvmfs "$W/bin/"
LUNPROXY=$W/bin/lunproxy
MKVMFS=$W/bin/mkvmfs
MNT=$(mktemp -d /tmp/lunproxy-bench-inv.XXXXXX)
cleanup() {
  if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  rmdir "$MNT" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One VM folder, as ESXi writes it. Text files are written by the shell itself (no fork per file).
make_vm() {
  local dir=$1 name=$2 n=$3 disk base sectors uuid hi=$(($3 >> 8)) lo=$(($3 & 255))
  mkdir -p "$dir"
  # Deterministic ids, so a rebuilt datastore is the same datastore.
  printf -v uuid '56 4d %02x %02x 3a 5b 7c 1d-9e 2f %02x %02x 4b 5c 6d 7e' "$hi" "$lo" "$lo" "$hi"
  {
    printf '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
    printf 'displayName = "%s"\nguestOS = "ubuntu-64"\nmemSize = "4096"\nnumvcpus = "2"\n' "$name"
    printf 'nvram = "%s.nvram"\nfirmware = "efi"\npciBridge0.present = "TRUE"\n' "$name"
    printf 'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'
    printf 'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "%s.vmdk"\nscsi0:0.deviceType = "scsi-hardDisk"\n' "$name"
    printf 'scsi0:1.present = "TRUE"\nscsi0:1.fileName = "%s_1.vmdk"\nscsi0:1.deviceType = "scsi-hardDisk"\n' "$name"
    printf 'ide1:0.present = "TRUE"\nide1:0.deviceType = "cdrom-raw"\nide1:0.fileName = "auto detect"\n'
    printf 'ethernet0.present = "TRUE"\nethernet0.virtualDev = "vmxnet3"\nethernet0.networkName = "VM Network"\n'
    printf 'ethernet0.addressType = "vpx"\nethernet0.generatedAddress = "00:50:56:01:%02x:%02x"\n' "$hi" "$lo"
    printf 'uuid.bios = "%s"\nvc.uuid = "52 %s"\nsched.swap.derivedName = "/vmfs/volumes/invbench/%s/%s-%08x.vswp"\n' \
      "$uuid" "${uuid#56 4d }" "$name" "$name" "$n"
    printf 'tools.syncTime = "FALSE"\nmigrate.hostLog = "%s-%08x.hlog"\n' "$name" "$n"
  } >"$dir/$name.vmx"
  printf '<?xml version="1.0"?>\n<Foundry>\n<VM>\n<VMId type="string">52 %s</VMId>\n<ClientMetaData>\n<clientMetaDataAttributes/>\n<HistoryEventList/></ClientMetaData></VM></Foundry>\n' \
    "${uuid#56 4d }" >"$dir/$name.vmxf"
  printf '.encoding = "UTF-8"\nsnapshot.lastUID = "1"\nsnapshot.needConsolidate = "FALSE"\n' >"$dir/$name.vmsd"
  printf '%s' "$NVRAM" >"$dir/$name.nvram"
  for disk in 0 1; do
    if [ "$disk" = 0 ]; then base=$name; sectors=$((40 * GIB / 512)); else base=${name}_1; sectors=$((100 * GIB / 512)); fi
    printf '# Disk DescriptorFile\nversion=1\nencoding="UTF-8"\nCID=%08x\nparentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\nRW %d VMFS "%s-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\nddb.geometry.cylinders = "5221"\nddb.geometry.heads = "255"\nddb.geometry.sectors = "63"\nddb.thinProvisioned = "1"\nddb.uuid = "60 00 C2 91 %02x %02x %02x 00-1a 2b 3c 4d 5e 6f 70 81"\nddb.virtualHWVersion = "19"\n' \
      $((0x10000 + n * 2 + disk)) "$sectors" "$base" "$hi" "$lo" "$disk" >"$dir/$base.vmdk"
    # Thin: a boot sector's worth of data, the rest a hole.
    printf '%s' "$NVRAM" >"$dir/$base-flat.vmdk"
    truncate -s $((sectors * 512)) "$dir/$base-flat.vmdk"
  done
  printf '2024-05-01T10:00:00.000Z In(05) vmx Log for VMware ESX pid=%d version=8.0.2 build=build-22380479\n2024-05-01T10:00:00.001Z In(05) vmx DICT displayName = "%s"\n' \
    "$n" "$name" >"$dir/vmware.log"
  printf '2024-04-01T10:00:00.000Z In(05) vmx Log for VMware ESX pid=%d\n' "$n" >"$dir/vmware-1.log"
}

SRC=$W/src-$VMS
if [ ! -e "$SRC/.complete" ]; then
  echo "generating $VMS VM folders under $SRC ..."
  rm -rf "$SRC"
  mkdir -p "$SRC"
  NVRAM=$(head -c 8684 /dev/zero | tr '\0' 'N')
  for ((i = 0; i < VMS; i++)); do
    name=$(printf 'vm%04d' "$i")
    make_vm "$SRC/$name" "$name" "$i"
  done
  touch "$SRC/.complete"
fi
FILES=$(find "$SRC" -type f ! -name .complete | wc -l)

NTFS_IMG=$W/ntfs-$VMS.img
if [[ " $FS " == *" ntfs "* ]] && { [ ! -e "$NTFS_IMG" ] || [ "$SRC/.complete" -nt "$NTFS_IMG" ]; }; then
  echo "building $NTFS_IMG (mkntfs + ntfs-3g) ..."
  rm -f "$NTFS_IMG"
  truncate -s 2G "$NTFS_IMG.tmp"
  mkntfs -F -q -f -c 4096 -L invbench "$NTFS_IMG.tmp"
  ntfs-3g "$NTFS_IMG.tmp" "$MNT"
  cp -r --sparse=always "$SRC"/vm* "$MNT"/
  umount "$MNT"
  mv "$NTFS_IMG.tmp" "$NTFS_IMG"
fi
for v in 5 6; do
  img=$W/vmfs$v-$VMS.img
  if [[ " $FS " == *" vmfs$v "* ]] && { [ ! -e "$img" ] || [ "$MKVMFS" -nt "$img" ] || [ "$SRC/.complete" -nt "$img" ]; }; then
    echo "building $img (mkvmfs --vmfs $v) ..."
    rm -f "$img"
    "$MKVMFS" --vmfs "$v" --label invbench "$SRC" "$img.tmp"
    mv "$img.tmp" "$img"
  fi
done

image_of() { if [ "$1" = ntfs ]; then echo "$NTFS_IMG"; else echo "$W/${1}-$VMS.img"; fi; }
# hyperfine -N splits commands on blanks.
case "$W" in *[[:space:]]*)
  echo "error: the checkout path holds a blank; the timed commands cannot" >&2
  exit 1
  ;;
esac

# The inventory must be complete for the timing to mean anything.
CHECKS=()
for fs in $FS; do
  img=$(image_of "$fs")
  read -r vms files < <("$LUNPROXY" vms "$img" --json | jq -s '[length, (map(.files | length) | add)] | @tsv' -r)
  state=ok
  if [ "$vms" != "$VMS" ] || [ "$files" != "$FILES" ]; then state=INCOMPLETE; fi
  CHECKS+=("$fs: lunproxy vms found $vms VMs with $files files (tree has $VMS VMs, $FILES files): $state")
  echo "${CHECKS[-1]}"
done
if [[ " $FS " == *" ntfs "* ]]; then
  CHECKS+=("ntfs: fls -r lists $(fls -r "$NTFS_IMG" | wc -l) entries")
  echo "${CHECKS[-1]}"
fi

# hyperfine, in ROUNDS rounds of RUNS/ROUNDS runs of each command, the order of the commands
# swapped every round: this VM's speed drifts by up to 2x within minutes, and with all of one
# tool's runs before all of the other's, a drift lands on one side of the ratio only. The runs
# of all rounds are pooled (times, and user + system time per run) into one JSON per
# (fs, cache); commands are named so the table can find them.
ROUNDS=${ROUNDS:-6}
((ROUNDS > RUNS)) && ROUNDS=$RUNS
declare -A MEAN=() SD=() CPU=() MED=()
for cache in warm cold; do
  if [ "$cache" = warm ]; then
    opts=(--warmup 2)
  else
    opts=(--prepare "sh -c 'sync; echo 3 > /proc/sys/vm/drop_caches'")
  fi
  for fs in $FS; do
    img=$(image_of "$fs")
    # Run without a shell (-N; hyperfine sends the output to /dev/null): a shell's start-up,
    # which hyperfine otherwise measures and subtracts, only adds noise to 30 ms runs.
    lp=(-n lunproxy "$LUNPROXY vms $img --json")
    peer=()
    [ "$fs" = ntfs ] && peer=(-n fls "$(command -v fls) -r $img")
    json=$W/hyperfine-$fs-$cache.json
    parts=()
    for ((round = 0; round < ROUNDS; round++)); do
      runs=$(((RUNS + round) / ROUNDS))
      part=$W/hyperfine-$fs-$cache.$round.json
      if ((round % 2)) && ((${#peer[@]})); then cmds=("${peer[@]}" "${lp[@]}"); else cmds=("${lp[@]}" "${peer[@]}"); fi
      hyperfine -N --style basic --runs "$runs" "${opts[@]}" --export-json "$part" "${cmds[@]}"
      parts+=("$part")
    done
    # Pooled: every run of every round, per command.
    jq -s '[.[].results[]] | group_by(.command) | map({
        command: .[0].command,
        times: (map(.times) | add),
        cpu: ((map((.user + .system) * (.times | length)) | add)
              / (map(.times | length) | add))
      } | .mean = ((.times | add) / (.times | length))
        | .stddev = (((.times | map(. * .) | add) / (.times | length) - .mean * .mean) | if . > 0 then sqrt else 0 end)
        | .median = (.times | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end)
      ) | {results: .}' "${parts[@]}" >"$json"
    rm -f "${parts[@]}"
    while read -r name mean sd cpu med; do
      MEAN[$fs/$cache/$name]=$mean SD[$fs/$cache/$name]=$sd CPU[$fs/$cache/$name]=$cpu MED[$fs/$cache/$name]=$med
    done < <(jq -r '.results[] | "\(.command) \(.mean) \(.stddev) \(.cpu) \(.median)"' "$json")
  done
done

echo
bench_machine
echo "datastore: $VMS VMs, $FILES files (10 a VM, thin -flat.vmdk extents); hyperfine, $RUNS runs each,"
echo "          in $ROUNDS rounds alternating which tool goes first"
echo "goal: lunproxy < 0.5 s and >= 5x faster than fls -r (ratio = t(fls -r) / t(lunproxy vms), of the"
echo "means, and in brackets of the medians, which one slow run does not move)"
echo "cpu s = user + system time (less disturbed by other load than the wall-clock mean)"
echo "lunproxy: built with cargo build --profile dist (fat LTO, one codegen unit)"
echo
row() { printf '| %-6s | %-5s | %-20s | %9s | %8s | %9s | %8s | %-26s |\n' "$@"; }
row fs cache command "mean s" "± s" "median s" "cpu s" "goal"
row ------ ----- -------------------- --------- -------- --------- -------- --------------------------
for fs in $FS; do
  for cache in warm cold; do
    lp=${MEAN[$fs/$cache/lunproxy]}
    under=$(awk -v t="$lp" 'BEGIN { print (t < 0.5 ? "< 0.5 s met" : "< 0.5 s MISSED") }')
    row "$fs" "$cache" "lunproxy vms --json" "$(printf %.3f "$lp")" \
      "$(printf %.3f "${SD[$fs/$cache/lunproxy]}")" "$(printf %.3f "${MED[$fs/$cache/lunproxy]}")" \
      "$(printf %.3f "${CPU[$fs/$cache/lunproxy]}")" "$under"
    if [ "$fs" = ntfs ]; then
      f=${MEAN[$fs/$cache/fls]}
      fm=${MED[$fs/$cache/fls]} lm=${MED[$fs/$cache/lunproxy]}
      row "$fs" "$cache" "fls -r" "$(printf %.3f "$f")" "$(printf %.3f "${SD[$fs/$cache/fls]}")" \
        "$(printf %.3f "$fm")" "$(printf %.3f "${CPU[$fs/$cache/fls]}")" \
        "$(awk -v a="$f" -v b="$lp" -v c="$fm" -v d="$lm" 'BEGIN { printf "%.1fx (%.1fx) %s", a / b, c / d, (a / b >= 5 && c / d >= 5 ? "met" : "MISSED") }')"
    fi
  done
done
echo
printf '%s\n' "${CHECKS[@]}"
