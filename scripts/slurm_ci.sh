#!/usr/bin/env bash
# A real single-node Slurm for `pulmo batch slurm` (issue #18), run by `make test`:
# starts munged, slurmctld and slurmd on 127.0.0.1 with a generated configuration in a
# temporary folder (ports 16817/16818, this host as the only node), waits until the node
# is idle, submits a 4-task array over four real LCTSC cases (quantify and compare with
# their lung masks) with `pulmo batch slurm --submit`, waits for the array and its
# afterok merge job, and checks that the merged table equals a single-process
# `pulmo batch` of the same manifest. The daemons are stopped by PID on exit.
# Needs the Debian packages slurm-wlm and munge (scripts/setup.sh installs them) and root
# (slurmd runs jobs as their user).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${PULMO_DATA:-../shared/data}
skip() {
  if [ "${CI:-}" = true ]; then
    echo "slurm_ci: $1" >&2
    exit 1
  fi
  echo "slurm_ci: skipped: $1"
  exit 0
}
[ -d "$data/lctsc256" ] || skip "the real data ($data/lctsc256) is missing"
data=$(cd "$data" && pwd)
for tool in munged slurmctld slurmd sbatch squeue sinfo; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || skip "$tool is not installed (slurm-wlm, munge)"
done
[ "$(id -u)" = 0 ] || skip "slurmd needs root"
cargo build --bin pulmo
pulmo=$PWD/target/debug/pulmo
T=$(mktemp -d /tmp/pulmo-slurm.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T"/{state,spool,log,munge,work}
chmod 755 "$T"

# munged on its own socket, with its own key (nothing of the machine's is touched).
dd if=/dev/urandom of="$T/munge/munge.key" bs=1 count=1024 status=none
chmod 600 "$T/munge/munge.key"
/usr/sbin/munged -F --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" \
  --seed-file="$T/munge/munged.seed" > "$T/munge/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$T/munge/munge.sock" ] && break; sleep 0.1; done
[ -S "$T/munge/munge.sock" ] || { cat "$T/munge/munged.out" >&2; echo "slurm_ci: munged did not start" >&2; exit 1; }

host=$(hostname -s)
cat > "$T/slurm.conf" <<EOF
ClusterName=pulmo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=batch Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$T/slurm.conf
slurmctld -D -f "$SLURM_CONF" > "$T/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" > "$T/log/slurmd.out" 2>&1 &
pids+=($!)
idle=""
for _ in $(seq 300); do
  state=$(sinfo -h -o %t 2>/dev/null || true)
  if [ "$state" = idle ]; then idle=1; break; fi
  sleep 0.1
done
if [ -z "$idle" ]; then
  tail -20 "$T"/log/*.log "$T"/log/*.out >&2 || true
  echo "slurm_ci: the node did not become idle in 30 s" >&2
  exit 1
fi
echo "slurm_ci: Slurm up ($(sinfo -h -o '%P %a %D %t'))"

# Four real cases; their lung masks serve as labels and reference.
manifest=$T/work/manifest.csv
echo "id,ct,labels,reference" > "$manifest"
for c in Case_000 Case_001 Case_002 Case_003; do
  echo "$c,$data/lctsc256/${c}_ct.nii.gz,$data/lctsc256/${c}_lungs.nii.gz,$data/lctsc256/${c}_lungs.nii.gz" >> "$manifest"
done
tasks=quantify,compare
start=$(date +%s%N)
out=$T/work/slurm-out
"$pulmo" batch slurm "$manifest" -o "$out" --tasks "$tasks" --shards 4 --array-max 2 \
  --cpus-per-task 1 --mem 400M --submit | tee "$T/submit.txt"
ids=$(sed -n 's/^submitted array job \([0-9]*\) and merge job \([0-9]*\)$/\1 \2/p' "$T/submit.txt")
[ -n "$ids" ] || { echo "slurm_ci: no job ids" >&2; exit 1; }
done_ok=""
for _ in $(seq 1200); do
  if [ -z "$(squeue -h -o %i 2>/dev/null)" ]; then done_ok=1; break; fi
  sleep 0.25
done
end=$(date +%s%N)
[ -n "$done_ok" ] || { squeue >&2; echo "slurm_ci: jobs still queued after 300 s" >&2; exit 1; }
if [ ! -f "$out/results.csv" ]; then
  tail -n 20 "$out"/slurm/*.out >&2 || true
  echo "slurm_ci: the merge job wrote no results.csv" >&2
  exit 1
fi
shards=$(ls "$out"/slurm/shard-*.out | wc -l)
[ "$shards" = 4 ] || { echo "slurm_ci: $shards shard logs, expected 4" >&2; exit 1; }

# The same manifest in one process: the same table (the seconds column aside).
single=$T/work/single-out
s0=$(date +%s%N)
"$pulmo" batch "$manifest" -o "$single" --tasks "$tasks" > /dev/null 2>&1
s1=$(date +%s%N)
strip() { python3 -c '
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
t = rows[0].index("seconds")
for r in rows:
    print(",".join(c for n, c in enumerate(r) if n != t))' "$1"; }
if ! diff <(strip "$out/results.csv") <(strip "$single/results.csv") >&2; then
  echo "slurm_ci: the Slurm table differs from the single-process table" >&2
  exit 1
fi
rows=$(($(wc -l < "$out/results.csv") - 1))
echo "slurm_ci: ok: 4-task array + afterok merge over $rows studies in $(( (end - start) / 1000000 )) ms (one process: $(( (s1 - s0) / 1000000 )) ms); the merged table equals the single-process one"
