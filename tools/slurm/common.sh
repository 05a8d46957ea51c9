# Shared set-up for navid's sbatch templates; each template sources it right after its #SBATCH lines:
#   source "${SLURM_SUBMIT_DIR:-$PWD}/tools/slurm/common.sh" "$@"
# so jobs must be submitted from the repository root (sbatch runs a copy of the script elsewhere).
#
# It provides
#   --help            prints the template's header comment and exits
#   NAVID_VENV        when set, this virtual environment is activated
#   MASTER_ADDR       first host of the allocation (scontrol show hostnames), the rendezvous host
#   MASTER_PORT       20000 + job id mod 20000 unless set, so jobs sharing a node do not collide
#   GPUS_PER_NODE     SLURM_GPUS_ON_NODE (from --gpus-per-node) unless set
#   NCCL settings     NCCL_DEBUG=WARN, TORCH_NCCL_ASYNC_ERROR_HANDLING=1 (a dead rank fails the step
#                     instead of hanging it); fabric-specific ones (NCCL_SOCKET_IFNAME, NCCL_IB_HCA)
#                     pass through from the submitting shell
#   TORCHRUN_ARGS     torchrun's multi-node arguments: one torchrun per node (srun --ntasks-per-node=1),
#                     GPUS_PER_NODE workers each, c10d rendezvous at MASTER_ADDR:MASTER_PORT
#   resume_args DIR   sets RESUME_ARGS for a training command writing into DIR, and STOP_FILE (see below)
#   run_step CMD...   runs a job step so that the USR1 trap can interrupt the wait (see below)
#
# Resume on requeue: the templates ask for `#SBATCH --requeue` and `#SBATCH --signal=B:USR1@300`.
# Five minutes before the time limit SLURM sends SIGUSR1 to this batch shell. For a training run the
# trap writes DIR/STOP: navid stops the run at its next logging step (every trainer.log_every_n_steps
# steps), writes checkpoints/last.ckpt there and exits; the job is then requeued (`scontrol requeue`),
# so no step is lost. If the run has not stopped within STOP_GRACE_S seconds (default 240), the job
# is requeued anyway and the run resumes from its last periodic checkpoint. Other steps (evaluation)
# are requeued at once. SLURM later starts the script again with SLURM_RESTART_COUNT > 0; pre-emption
# with PreemptMode=REQUEUE restarts it the same way, without the signal (work since the last periodic
# checkpoint is then lost: lower trainer.checkpoint_every_n_steps if steps are slow). On every start
# `resume_args` looks at the run's folder: a checkpoints/last.ckpt there means `--resume` (continue
# from it to the same final step); a restart that never reached its first checkpoint means
# `--overwrite` (start over in its own folder); a first start passes neither, so an existing run is
# never overwritten by accident. It also removes a STOP file left by an earlier start.

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
    sed -n '2,/^[^#]/{/^#SBATCH/d;/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi

if [[ -n "${NAVID_VENV:-}" ]]; then
    source "$NAVID_VENV/bin/activate"
fi

export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:?set GPUS_PER_NODE or submit with --gpus-per-node}}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
# CPU threads per worker: the task's CPUs shared by the node's workers (at least one each).
cpus_per_worker=$(( ${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE} / GPUS_PER_NODE ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cpus_per_worker > 0 ? cpus_per_worker : 1 ))}
export PYTHONUNBUFFERED=1

TORCHRUN_ARGS=(
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE"
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT"
)

resume_args() {
    STOP_FILE="$1/STOP"
    rm -f "$STOP_FILE"
    if [[ -f "$1/checkpoints/last.ckpt" ]]; then
        RESUME_ARGS=(--resume)
    elif (( ${SLURM_RESTART_COUNT:-0} > 0 )); then
        RESUME_ARGS=(--overwrite)
    else
        RESUME_ARGS=()
    fi
}

requeue() {
    if [[ -n "${STOP_FILE:-}" && -d "$(dirname "$STOP_FILE")" ]]; then
        echo "navid: SIGUSR1 (time limit near): asking the run to stop and write its checkpoint ($STOP_FILE);" \
             "job $SLURM_JOB_ID is requeued when it has, or in ${STOP_GRACE_S:-240} s"
        touch "$STOP_FILE"
        STOP_DEADLINE=$(( SECONDS + ${STOP_GRACE_S:-240} ))  # run_step requeues when the run stops, or then
    else
        echo "navid: SIGUSR1 (time limit near): requeueing job $SLURM_JOB_ID;" \
             "its next start resumes from the last checkpoint"
        scontrol requeue "$SLURM_JOB_ID"
    fi
}
trap requeue USR1

# The step runs in the background because bash runs a trap only once the foreground command ends;
# `wait` returns early (status > 128) when the trap ran, and the loop goes on waiting for the step.
run_step() {
    "$@" &
    local pid=$! status
    while true; do
        wait "$pid" && status=0 || status=$?
        if (( status > 128 )) && kill -0 "$pid" 2>/dev/null; then
            if [[ -n "${STOP_DEADLINE:-}" ]]; then  # the trap asked the run to stop: until the deadline, let it
                while kill -0 "$pid" 2>/dev/null && (( SECONDS < STOP_DEADLINE )); do
                    sleep 1
                done
                if kill -0 "$pid" 2>/dev/null; then
                    echo "navid: the run did not stop within ${STOP_GRACE_S:-240} s; requeueing job $SLURM_JOB_ID"
                else
                    echo "navid: the run stopped; requeueing job $SLURM_JOB_ID"
                fi
                scontrol requeue "$SLURM_JOB_ID"
                STOP_DEADLINE=
            fi
            continue
        fi
        return "$status"
    done
}

echo "navid: job ${SLURM_JOB_ID} start ${SLURM_RESTART_COUNT:-0}" \
     "on ${SLURM_NNODES} node(s) x ${GPUS_PER_NODE} GPU(s)," \
     "rendezvous ${MASTER_ADDR}:${MASTER_PORT}"
