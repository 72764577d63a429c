#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine runs slurm/dgr-multinode-cpu.sbatch (the template users
# submit), from a `cmake --install` of the build (dgr on PATH, the template and requeue.sh from
# PREFIX/share/dgr/slurm), for a short stage-1 training: one rank per node, each slurmd in its own network and UTS
# namespace (own address and hostname), ranks talking over TCP across a bridge, launched with
# `srun --mpi=pmix`. Mid-run the test sends `scancel --batch --signal=USR1` (what --signal=B:USR1@N does
# before the time limit); slurm/requeue.sh passes it to the ranks, dgr commits a checkpoint and exits 3,
# the job requeues itself, restarts with SLURM_RESTART_COUNT=1, resumes from that checkpoint and finishes.
# Asserts: the job ran on n1 and n2, the stop step's checkpoint is committed, Slurm counts one restart, the
# restart resumed from the stop step, and the final model.h5 has the same weights, bit for bit (h5diff), as
# an uninterrupted `mpiexec -n 2` run with the same arguments. Then a plain `scancel` of a second job
# (SIGTERM, as a user's cancel): dgr still checkpoints, and the job is cancelled, not requeued. Then `dgr mine`
# through the same template (`TEMPLATE mine ARGS`): USR1 mid-run, the mining stops after a round (exit 3), the
# job requeues, the same command continues OUT.partial, and the mined files equal an uninterrupted mining. Last,
# slurm/dgr-pipeline.sh submits index -> stage 1 -> mine -> teacher + prepare -> stage 2 as dependent jobs.
# DGR_LAUNCHER=mpirun in the environment runs the same checks with Open MPI's mpirun inside the allocation.
# Needs root, apt (installs slurmd, slurmctld, slurm-client, munge when missing) and network namespaces;
# exits 77 (skipped) without them. Stops only the daemons it started and removes only what it created.
# Usage: slurm_cluster_test.sh DGR MPIEXEC [MPIEXEC_FLAGS...]
set -euo pipefail
# Nothing from an enclosing Slurm job (or a real cluster's SLURM_CONF) may leak into the private cluster.
for name in $(compgen -e | grep '^SLURM_' || true); do unset "$name"; done
unset DGR DGR_SLURM_DIR
dgr=$(readlink -f "$1"); shift
mpiexec=("$@")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
slurm_dir=$(cd "$here/../slurm" && pwd)
template=$slurm_dir/dgr-multinode-cpu.sbatch
deadline=$((SECONDS + 330))  # below the CTest TIMEOUT, so the cleanup always runs

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; failed=1; exit 1; }

# ---- prerequisites (skip, not fail, when the machine cannot host a cluster) ----
[[ $(id -u) -eq 0 ]] || skip "needs root (daemons, network namespaces, apt-get)"
for tool in ip nsenter unshare h5diff python3; do
  command -v "$tool" >/dev/null || skip "'$tool' not found"
done
packages=(slurmd slurmctld slurm-client munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} > 0)); then
  command -v apt-get >/dev/null || skip "Slurm packages missing (${missing[*]}) and no apt-get"
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dgr-slurm-apt.log 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dgr-slurm-apt.log 2>&1; } ||
    skip "apt-get install ${missing[*]} failed (no network?): see /tmp/dgr-slurm-apt.log"
fi
[[ -f /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so || -n $(find /usr/lib -name mpi_pmix.so 2>/dev/null | head -1) ]] ||
  skip "this Slurm build has no PMIx plugin (mpi_pmix.so), which srun --mpi=pmix needs"

# ---- everything this test creates; the EXIT trap removes exactly these ----
id=$$
work=$(mktemp -d /tmp/dgr_slurm.XXXXXX)
chmod 700 "$work"
nodes=(n1 n2)
namespaces=()
bridge=""
daemon_pids=()
failed=0
cleanup() {
  local rc=$?
  set +e
  if ((rc != 0 && rc != 77)) || ((failed)); then
    for f in "$work"/job.out "$work"/job2.out "$work"/slurmctld.log "$work"/slurmd.n1.log "$work"/slurmd.n2.log "$work"/munged.log; do
      [[ -s $f ]] && { echo "==== tail of $f"; tail -n 40 "$f"; }
    done
  fi
  if [[ ${SLURM_CONF:-} == "$work/slurm.conf" ]] && ((${#daemon_pids[@]} > 1)); then
    scancel --quiet --full --signal=KILL --user=root 2>/dev/null  # only this private cluster's jobs
    sleep 1
  fi
  for pid in "${daemon_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${daemon_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${daemon_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for ns in "${namespaces[@]}"; do
    # Whatever still runs in a namespace this test made (a slurmstepd, a rank) was started by this test.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns delete "$ns" 2>/dev/null
  done
  [[ -n $bridge ]] && ip link delete "$bridge" 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# The jobs run the installed dgr, found as a user's would be: on PATH, with the templates and requeue.sh from
# PREFIX/share/dgr/slurm (no DGR, no DGR_SLURM_DIR, nothing from the build tree).
build_dir=$(dirname "$(dirname "$dgr")")
[[ -f $build_dir/CMakeCache.txt ]] || skip "$dgr is not in a CMake build tree (build/launcher/dgr): cannot install it"
cmake --install "$build_dir" --prefix "$work/prefix" > "$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
dgr=$work/prefix/bin/dgr
slurm_dir=$work/prefix/share/dgr/slurm
template=$slurm_dir/dgr-multinode-cpu.sbatch

# ---- data set, index, and the uninterrupted reference run (plain mpiexec, no Slurm) ----
data=$work/data
mkdir -p "$data"
python3 "$(dirname "$0")/synthetic_data.py" "$data"
"$dgr" index --data "$data" --out "$data/index" --vocab-size 200 > "$work/index.log" 2>&1 ||
  { cat "$work/index.log"; fail "dgr index failed"; }

# Identical arguments for both runs; one LibTorch thread per rank (the template maps --cpus-per-task=1 to
# --threads 1) so both runs compute the same sums in the same order.
# 3 epochs of 35 steps; a checkpoint every 5 steps, all kept so the stop step's is still there at the end.
train_args=(--stage generate --data "$data" --preset test --epochs 3 --batch 16 --save-every 5 --keep-last 0
            --views title,body --eval-every 0 --eval-views title,body --beam 4)
start=$SECONDS
"${mpiexec[@]}" -n 2 "$dgr" train "${train_args[@]}" --threads 1 --out "$work/reference" > "$work/reference.log" 2>&1 ||
  { cat "$work/reference.log"; fail "the uninterrupted reference run failed"; }
[[ -f $work/reference/model.h5 ]] || fail "the reference run wrote no model.h5"
# The last step is always checkpointed, and --keep-last 0 keeps every step.
total_steps=$(ls "$work/reference/checkpoints" | grep -E '^step-[0-9]+$' | tail -1 | sed 's/^step-0*//')
[[ -n $total_steps ]] || fail "the reference run left no checkpoint"
echo "reference run: $total_steps steps in $((SECONDS - start)) s (mpiexec -n 2, no Slurm)"
# The mining job's reference: the tiny set (214 training queries, enough rounds to stop in the middle), a
# model of the test preset, mined uninterrupted with the same arguments the job gets.
tiny=$(cd "$(dirname "$0")/../datasets/debian-tiny" && pwd)
"$dgr" index --data "$tiny" --out "$work/tiny-index" --vocab-size 500 --threads 1 > "$work/tiny-index.log" 2>&1 ||
  { cat "$work/tiny-index.log"; fail "dgr index (tiny) failed"; }
"$dgr" train --stage generate --data "$tiny" --index "$work/tiny-index" --out "$work/tiny-model" --preset test \
  --epochs 1 --batch 32 --threads 1 --views title,body --eval-every 0 --eval-views title --eval-max-queries 2 \
  > "$work/tiny-model.log" 2>&1 || { cat "$work/tiny-model.log"; fail "the tiny model for mining failed"; }
mine_args=(--data "$tiny" --index "$work/tiny-index" --model "$work/tiny-model/model.h5" --split train --depth 20
           --max-keys 6 --views title,body --beam 8 --round-size 1)
"${mpiexec[@]}" -n 2 "$dgr" mine "${mine_args[@]}" --threads 1 --out "$work/mine-reference" > "$work/mine-reference.log" 2>&1 ||
  { cat "$work/mine-reference.log"; fail "the uninterrupted reference mining failed"; }

# ---- the cluster: munge, slurmctld on a bridge, one slurmd per network + UTS namespace ----
subnet=""
for third in $(seq $((id % 200 + 20)) 254) $(seq 20 254); do
  ip -4 route show | grep -q "^10\.213\.$third\." || { subnet=10.213.$third; break; }
done
[[ -n $subnet ]] || skip "no free 10.213.x.0/24 subnet for the cluster's bridge"
port=$((20000 + id % 20000))
while ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; do port=$((port + 1)); done

bridge=dgrbr$id
ip link add "$bridge" type bridge 2>/dev/null || { bridge=""; skip "cannot create a bridge (no CAP_NET_ADMIN?)"; }
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
i=0
for node in "${nodes[@]}"; do
  i=$((i + 1))
  ns=dgr-slurm-$id-$node
  ip netns add "$ns" || skip "cannot create network namespace $ns"
  namespaces+=("$ns")
  ip link add "dgrv$id$i" type veth peer name eth0 netns "$ns"
  ip link set "dgrv$id$i" master "$bridge" up
  ip -n "$ns" addr add "$subnet.$((10 + i))/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

dd if=/dev/urandom of="$work/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge.key"
munged -F --socket="$work/munge.sock" --key-file="$work/munge.key" --pid-file="$work/munged.pid" \
  --log-file="$work/munged.log" --seed-file="$work/munged.seed" --force > "$work/munged.out" 2>&1 &
daemon_pids+=($!)

ctl_host=$(hostname -s)
mkdir -p "$work/state" "$work/spool/n1" "$work/spool/n2" "$work/tmp/n1" "$work/tmp/n2" "$work/logs"
cat > "$work/slurm.conf" <<EOF
ClusterName=dgrtest$id
SlurmctldHost=$ctl_host($subnet.1)
SlurmctldPort=$port
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge.sock,cred_expire=10
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.%n.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.%n.log
TmpFS=$work/tmp/%n
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=n1 NodeHostname=n1 NodeAddr=$subnet.11 CPUs=2 State=UNKNOWN
NodeName=n2 NodeHostname=n2 NodeAddr=$subnet.12 CPUs=2 State=UNKNOWN
PartitionName=dgr Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$work/slurm.conf
for _ in $(seq 50); do [[ -S $work/munge.sock ]] && break; sleep 0.1; done
[[ -S $work/munge.sock ]] || fail "munged did not start"
slurmctld -D -c -i -f "$SLURM_CONF" > "$work/slurmctld.out" 2>&1 &
daemon_pids+=($!)
for node in "${nodes[@]}"; do
  # `ip netns exec` would remount /sys; nsenter --net only switches the network, unshare --uts the hostname.
  nsenter --net="/run/netns/dgr-slurm-$id-$node" unshare --uts \
    sh -c "hostname $node && exec slurmd -D -N $node -f '$SLURM_CONF'" > "$work/slurmd.$node.out" 2>&1 &
  daemon_pids+=($!)
done
up=0
while ((SECONDS < deadline)); do
  idle=$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$' || true)
  ((idle == 2)) && { up=1; break; }
  sleep 0.5
done
((up)) || fail "the two slurmd nodes did not become idle: $(sinfo -N 2>&1)"
srun --mpi=list 2>&1 | grep -q pmix || skip "srun --mpi=list has no pmix here: $(srun --mpi=list 2>&1 | tr '\n' ' ')"
echo "cluster up: slurmctld on $subnet.1:$port, n1=$subnet.11, n2=$subnet.12 (separate network namespaces)"

# ---- helpers for the jobs ----
cd "$work"
submit() {  # submit OUT_DIR OUTPUT_FILE: the multi-node template, one rank per node; prints the job id
  PATH="$work/prefix/bin:$PATH" DGR_LOG_DIR="$work/logs" \
    sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --time=10 --output="$2" \
           "$template" "${train_args[@]}" --out "$1"
}
field() { scontrol show job "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -1 | cut -d= -f2; }
ended() { case $1 in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) return 0;; esac; return 1; }
wait_until_ended() {  # wait_until_ended JOB: polls until the job ends or the deadline passes; sets `state`
  state=""
  while ((SECONDS < deadline)); do
    state=$(field "$1" JobState)
    ended "$state" && break
    sleep 1
  done
}
# Mid-run, deterministically: once a checkpoint is committed the ranks are in the training loop (their stop
# handlers are installed), with most of the run's steps still to go.
wait_for_checkpoint() {  # wait_for_checkpoint JOB OUT_DIR
  while ((SECONDS < deadline)); do
    compgen -G "$2/checkpoints/step-*/COMMITTED" >/dev/null && return 0
    ! ended "$(field "$1" JobState)" || fail "job $1 ended ($(field "$1" JobState)) before it was signalled"
    sleep 0.2
  done
  fail "job $1 committed no checkpoint before the deadline (state $(field "$1" JobState))"
}

# ---- job 1: a USR1 to the batch shell mid-run (what --signal=B:USR1@N sends before the time limit) ----
out=$work/slurm-run
job=$(submit "$out" "$work/job.out")
echo "submitted job $job"
wait_for_checkpoint "$job" "$out"
scancel --batch --signal=USR1 "$job" || fail "scancel --batch --signal=USR1 $job failed"
echo "sent USR1 to the batch shell of job $job"
wait_until_ended "$job"
ended "$state" || fail "job $job did not finish before the deadline (state ${state:-?}, $(field "$job" Restarts) restarts)"
final=$(scontrol show job "$job")
echo "---- job output ($work/job.out)"
grep -v 'checkpoint step=' "$work/job.out"
echo "----"

# ---- evidence ----
grep -q 'JobState=COMPLETED' <<<"$final" || fail "job $job ended $(grep -o 'JobState=[A-Z_]*' <<<"$final")"
grep -q 'ExitCode=0:0' <<<"$final" || fail "job $job: $(grep -o 'ExitCode=[0-9:]*' <<<"$final"), expected 0:0"
grep -q 'Restarts=1\b' <<<"$final" || fail "Slurm counts $(grep -o 'Restarts=[0-9]*' <<<"$final"), expected Restarts=1"
grep -q 'SLURM_RESTART_COUNT=0 ' "$work/job.out" || fail "the first run did not log SLURM_RESTART_COUNT=0"
grep -q 'SLURM_RESTART_COUNT=1 ' "$work/job.out" || fail "the restarted run did not log SLURM_RESTART_COUNT=1"
grep -q 'got SIGUSR1: sending SIGUSR1 to the step' "$work/job.out" || fail "requeue.sh did not get USR1 from scancel --batch"
stop_step=$(grep -o 'stopped by a signal at step [0-9]*' "$work/job.out" | head -1 | awk '{print $NF}')
[[ -n $stop_step ]] || fail "no 'stopped by a signal at step N' in the job output"
((stop_step < total_steps)) || fail "the stop came at step $stop_step of $total_steps: not mid-run"
grep -q 'step ended with exit code 3' "$work/job.out" || fail "the stopped step did not exit 3"
grep -q 'requeueing (restart 1)' "$work/job.out" || fail "requeue.sh did not requeue after exit 3"
stop_dir=$(printf 'step-%08d' "$stop_step")
[[ -f $out/checkpoints/$stop_dir/COMMITTED ]] || fail "no committed checkpoint $stop_dir at the stop step"
grep -q "resumed from .*$stop_dir (step $stop_step" "$work/job.out" || fail "the restart did not resume from $stop_dir"
grep -q '\[requeue.sh\] job [0-9]*: step: .* train --threads 1 ' "$work/job.out" ||
  fail "the template did not turn --cpus-per-task=1 into dgr train --threads 1"
# One rank on each node: the per-rank debug logs name the host every run started on.
grep -q 'start: host=n1 .* rank=0 ' "$work/logs/dgr.r00.log" || fail "rank 0 did not run on n1"
grep -q 'start: host=n2 .* rank=1 ' "$work/logs/dgr.r01.log" || fail "rank 1 did not run on n2"
[[ $(grep -c 'start: host=n1 .*slurm_job='"$job"' slurm_restart_count=1' "$work/logs/dgr.r00.log") -eq 1 ]] ||
  fail "rank 0's log has no start of job $job with slurm_restart_count=1"
[[ -f $out/model.h5 ]] || fail "the Slurm run wrote no model.h5"
h5diff "$work/reference/model.h5" "$out/model.h5" /weights /weights ||
  fail "the stopped, requeued and resumed run's weights differ from the uninterrupted run's"
n=$(h5ls -r "$out/model.h5/weights" | grep -c Dataset)
((n > 0)) || fail "no weight arrays in $out/model.h5"
echo "job $job: stopped at step $stop_step of $total_steps on n1+n2, requeued (Restarts=1), resumed from" \
     "$stop_dir; $n weight arrays equal to the uninterrupted run (h5diff)"

# ---- job 2: a plain scancel (SIGTERM everywhere) checkpoints but must not requeue the job ----
out2=$work/slurm-cancel
job2=$(submit "$out2" "$work/job2.out")
echo "submitted job $job2"
wait_for_checkpoint "$job2" "$out2"
scancel "$job2" || fail "scancel $job2 failed"
decided=0
while ((SECONDS < deadline)); do
  grep -q 'requeueing\|step ended with exit code [^3]' "$work/job2.out" 2>/dev/null && { decided=1; break; }
  sleep 0.5
done
sleep 2  # a wrong requeue would show by now as Restarts=1 and a pending job
echo "---- job output ($work/job2.out)"
grep -v 'checkpoint step=' "$work/job2.out"
echo "----"
((decided)) || fail "job $job2: requeue.sh logged no decision after scancel"
grep -q 'got SIGTERM' "$work/job2.out" || fail "job $job2: requeue.sh did not get SIGTERM from scancel"
grep -q 'not requeueing' "$work/job2.out" || fail "job $job2: requeue.sh requeued a cancelled job"
[[ $(field "$job2" Restarts) == 0 ]] || fail "job $job2 was restarted after scancel (Restarts=$(field "$job2" Restarts))"
[[ $(field "$job2" JobState) == CANCELLED ]] || fail "job $job2 is $(field "$job2" JobState) after scancel, expected CANCELLED"
cancel_step=$(grep -o 'stopped by a signal at step [0-9]*' "$work/job2.out" | head -1 | awk '{print $NF}')
[[ -n $cancel_step ]] || fail "job $job2: dgr did not checkpoint and stop on SIGTERM"
[[ -f $out2/checkpoints/$(printf 'step-%08d' "$cancel_step")/COMMITTED ]] || fail "job $job2: no committed checkpoint at step $cancel_step"
echo "job $job2: scancel -> checkpoint at step $cancel_step, CANCELLED, not requeued"

# ---- job 3: `dgr mine` through the same template, USR1 mid-run, requeued, continued ----
out3=$work/slurm-mine
job3=$(PATH="$work/prefix/bin:$PATH" DGR_LOG_DIR=none \
  sbatch --parsable --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --time=10 --output="$work/job3.out" \
         "$template" mine "${mine_args[@]}" --out "$out3")
echo "submitted job $job3 (dgr mine)"
mined_so_far() { python3 -c "import json; print(json.load(open('$out3.partial/resume.json'))['queries'])" 2>/dev/null || echo 0; }
while ((SECONDS < deadline)) && (($(mined_so_far) < 4)); do
  ! ended "$(field "$job3" JobState)" || fail "job $job3 ended ($(field "$job3" JobState)) before it was signalled"
  sleep 0.2
done
scancel --batch --signal=USR1 "$job3" || fail "scancel --batch --signal=USR1 $job3 failed"
wait_until_ended "$job3"
echo "---- job output ($work/job3.out)"
grep -v 'mined [0-9]*/' "$work/job3.out"
echo "----"
final=$(scontrol show job "$job3")
grep -q 'JobState=COMPLETED' <<<"$final" || fail "job $job3 ended $(grep -o 'JobState=[A-Z_]*' <<<"$final")"
grep -q 'Restarts=1\b' <<<"$final" || fail "job $job3: Slurm counts $(grep -o 'Restarts=[0-9]*' <<<"$final"), expected 1"
grep -q 'stopped on a signal after [0-9]* of 214 queries' "$work/job3.out" || fail "job $job3: dgr mine did not stop mid-run"
grep -q 'continuing .*partial: [0-9]* of 214 queries' "$work/job3.out" || fail "job $job3: the restart did not continue"
for f in candidates.jsonl candidates.tsv run.trec; do
  cmp "$work/mine-reference/$f" "$out3/$f" || fail "job $job3: $f differs from the uninterrupted mining"
done
echo "job $job3: dgr mine stopped at $(grep -o 'after [0-9]* of 214' "$work/job3.out" | head -1), requeued, continued;" \
     "candidates.jsonl, candidates.tsv and run.trec equal the uninterrupted mining"

# ---- the whole pipeline as a chain of jobs (slurm/dgr-pipeline.sh from the install) ----
pdata=$work/pipeline-data
mkdir -p "$pdata"
cp "$data"/corpus.tsv "$data"/queries.* "$data"/qrels.* "$pdata/"
last=$(PATH="$work/prefix/bin:$PATH" DGR_LOG_DIR=none bash "$slurm_dir/dgr-pipeline.sh" --data "$pdata" \
  --out "$work/pipeline" \
  --stage1 "--preset test --epochs 4 --batch 16 --threads 1 --views title,body --eval-every 0 --eval-views title --beam 2 --eval-max-queries 2" \
  --mine "--split train --views title,body --beam 4 --depth 20 --threads 1" \
  --stage2 "--epochs 1 --batch 4 --threads 1 --eval-every 0 --eval-views title --beam 2 --eval-max-queries 2 --gen-views title" \
  -- --time=10 | tail -n 1)
echo "pipeline submitted: last job $last"
wait_until_ended "$last"
for f in index stage1 mine prepare stage2; do echo "---- $f.out"; grep -v 'checkpoint step=\|mined [0-9]*/\|\[info\] \[train\] step=' "$work/pipeline/$f.out" 2>/dev/null | tail -n 5 || true; done
[[ $state == COMPLETED ]] || fail "the pipeline's last job (stage 2, $last) ended ${state:-unfinished}"
[[ -f $pdata/index/index.json && -f $work/pipeline/stage1/model.h5 && -f $work/pipeline/mined/manifest.json &&
   -f $work/pipeline/prepared/manifest.json && -f $work/pipeline/stage2/model.h5 ]] ||
  fail "the pipeline's jobs did not leave index, stage-1 model, mined and prepared sets and stage-2 model"
echo "pipeline: index -> stage 1 -> mine -> teacher + prepare -> stage 2 as dependent jobs, all completed"
echo "ok ($SECONDS s)"
