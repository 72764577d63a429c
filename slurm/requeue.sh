#!/usr/bin/env bash
# requeue.sh: runs one job step (`srun ... dgr train ...` or `mpirun ... dgr train ...`) from a Slurm batch
# script, forwards a stop signal to it, and requeues the job when dgr stopped after committing a checkpoint.
#
# Usage, as the last line of a batch script (exec keeps the batch shell's PID, which `--signal=B:USR1@N`
# and `scancel --batch --signal=USR1` signal):
#     exec bash "$DGR_SLURM_DIR/requeue.sh" srun --mpi=pmix dgr train --out runs/s1 ...
#
# What it does:
#   1. logs the start with SLURM_RESTART_COUNT (0 on the first run, 1 after the first requeue, ...);
#   2. runs the step in the background and waits for it, so the batch shell can take signals meanwhile;
#   3. on SIGUSR1 or SIGTERM sends SIGUSR1 to the step's launcher: srun and Open MPI's mpirun pass SIGUSR1
#      on to every rank, and dgr's ranks agree at the next step boundary to write a checkpoint and exit with
#      code 3 (a SIGTERM is not passed on as SIGTERM, because srun answers SIGTERM by killing the tasks);
#   4. when the step exits with 3, runs `scontrol requeue $SLURM_JOB_ID`: the job returns to the queue
#      under the same id, and when it starts again the same `dgr train` command resumes from the newest
#      committed checkpoint in its --out directory (no flag needed); the same `dgr mine` command continues
#      OUT.partial from its last gathered round. Any other exit code is passed on.
#      Not after a SIGTERM alone: that is `scancel JOBID`, a preemption or the time limit without --signal; the
#      job must end (a preemption with PreemptMode=REQUEUE is requeued by Slurm itself); dgr still
#      checkpoints if it can within KillWait (30 s by default), and resubmitting resumes from there.
#
# Environment:
#   DGR_REQUEUE=0   report the stop and exit 3 instead of requeueing (resubmit by hand to resume).
#   DGR_REQUEUE_MAX=N   requeue at most N times (default: no limit; SLURM_RESTART_COUNT counts them).
#
# Outside Slurm (no SLURM_JOB_ID) it only runs the command and passes its exit code on.
# Its lines go to stdout (the job's output file) and start with "[requeue.sh]".
set -uo pipefail

note() { printf '[%(%F %T)T] [requeue.sh] job %s: %s\n' -1 "${SLURM_JOB_ID:-none}" "$*"; }

if (($# == 0)); then
  echo "usage: requeue.sh LAUNCHER [ARGS...]   e.g. requeue.sh srun --mpi=pmix dgr train --out runs/s1" >&2
  exit 2
fi

restart_count=${SLURM_RESTART_COUNT:-0}
note "start: SLURM_RESTART_COUNT=$restart_count nodes=${SLURM_JOB_NODELIST:-?} tasks=${SLURM_NTASKS:-?}" \
     "host=$(hostname)"
note "step: $*"

step_pid=""
stop_signal=""  # the last stop signal the batch shell got
got_usr1=0
on_signal() {
  stop_signal=$1
  [[ $1 != USR1 ]] || got_usr1=1
  if [[ -z $step_pid ]]; then
    note "got SIG$1 before the step started; it is passed on as soon as the step runs"
    return
  fi
  note "got SIG$1: sending SIGUSR1 to the step (pid $step_pid); dgr checkpoints at the next step boundary" \
       "and exits 3"
  kill -USR1 "$step_pid" 2>/dev/null || note "the step (pid $step_pid) has already ended"
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

"$@" &
step_pid=$!
if [[ -n $stop_signal ]]; then on_signal "$stop_signal"; fi
# `wait` returns early (status > 128) whenever a trapped signal arrives: wait again until the step is gone.
# Bash keeps the exit status of a finished background job, so the last `wait` returns the step's own.
while kill -0 "$step_pid" 2>/dev/null; do
  wait "$step_pid"
done
wait "$step_pid"
rc=$?
note "step ended with exit code $rc"

if ((rc != 3)); then
  if [[ -n $stop_signal ]]; then
    note "the step was asked to stop (SIG$stop_signal) but did not exit with 3 (checkpoint committed):" \
         "not requeueing; the newest committed checkpoint in --out is still valid, resubmit to resume from it"
  fi
  exit "$rc"
fi
if [[ $stop_signal == TERM ]] && ((!got_usr1)); then
  note "dgr stopped after committing a checkpoint (exit 3) on SIGTERM (scancel, preemption or the time" \
       "limit): not requeueing; resubmit the job to resume from the checkpoint"
  exit 3
fi
if [[ -z ${SLURM_JOB_ID:-} ]]; then
  note "dgr stopped after committing a checkpoint (exit 3); not under Slurm: run the same command to resume"
  exit 3
fi
if [[ ${DGR_REQUEUE:-1} == 0 ]]; then
  note "dgr stopped after committing a checkpoint (exit 3); DGR_REQUEUE=0: resubmit the job to resume"
  exit 3
fi
if [[ -n ${DGR_REQUEUE_MAX:-} ]] && ((restart_count >= DGR_REQUEUE_MAX)); then
  note "dgr stopped after committing a checkpoint (exit 3); already requeued $restart_count times" \
       "(DGR_REQUEUE_MAX=$DGR_REQUEUE_MAX): resubmit the job to resume"
  exit 3
fi
note "dgr stopped after committing a checkpoint (exit 3): requeueing (restart $((restart_count + 1)))"
if ! scontrol requeue "$SLURM_JOB_ID"; then
  note "scontrol requeue $SLURM_JOB_ID failed (submitted with --no-requeue, or JobRequeue=0 in slurm.conf?):" \
       "resubmit the job to resume from the newest committed checkpoint"
fi
exit 3
