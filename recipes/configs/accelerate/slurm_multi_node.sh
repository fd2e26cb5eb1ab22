#!/bin/bash
# Train on several machines under SLURM: one `accelerate launch` per machine, one process per GPU.
#
#   sbatch --nodes=4 recipes/configs/accelerate/slurm_multi_node.sh recipes/pretrain_mlm.py \
#       output_dir=/shared/runs/mlm data.prepared=/shared/data/wiki_store [key=value ...]
#
# The arguments are the recipe and its settings; output_dir must be on a disk every machine shares.
# resume=auto is added, so the same command starts the run and continues it: when SLURM's SIGTERM
# comes (--signal below, or a preemption), every process saves one checkpoint at the same step and
# run_status.json says "preempted"; this script then requeues the job, which resumes from there.
# docs/multi_node.md explains every line.
#
#SBATCH --job-name=nlp_ssl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

# The accelerate config this launches with (a path from the folder sbatch was run in, where the job starts).
NLP_SSL_ACCELERATE_CONFIG=${NLP_SSL_ACCELERATE_CONFIG:-recipes/configs/accelerate/multi_node.yaml}
# How accelerate is started (a virtual environment's python: "/path/to/python -m accelerate.commands.launch").
NLP_SSL_ACCELERATE=${NLP_SSL_ACCELERATE:-accelerate launch}
# Seconds the launcher gives its processes after SIGTERM to save their checkpoint before it kills them
# (torch's default is 30); keep it below the --signal lead time above.
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-240}

# GPUs on this machine, from what SLURM says (SLURM_GPUS_ON_NODE, or --gpus-per-node=[type:]N).
nlp_ssl_gpus_per_node() {
    local gpus=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-}}
    gpus=${gpus##*:}
    if [[ ! $gpus =~ ^[1-9][0-9]*$ ]]; then
        echo "nlp_ssl: cannot tell the GPUs per machine from SLURM_GPUS_ON_NODE/SLURM_GPUS_PER_NODE ('$gpus')" >&2
        return 2
    fi
    echo "$gpus"
}

# The launch command of the machine this runs on, from the job's variables: machine rank SLURM_NODEID,
# SLURM_NNODES machines, nodes × GPUs per node processes in all, machine 0 at MASTER_ADDR:MASTER_PORT.
# Prints one argument per line.
nlp_ssl_launch_command() {
    local gpus launcher
    gpus=$(nlp_ssl_gpus_per_node) || return 2
    read -ra launcher <<< "$NLP_SSL_ACCELERATE"
    printf '%s\n' "${launcher[@]}" --config_file "$NLP_SSL_ACCELERATE_CONFIG" \
        --num_machines "${SLURM_NNODES:?}" --machine_rank "${SLURM_NODEID:?}" \
        --num_processes "$((SLURM_NNODES * gpus))" \
        --main_process_ip "${MASTER_ADDR:?}" --main_process_port "${MASTER_PORT:?}" \
        "$@" resume=auto
}

# Runs on each machine (a task of srun): its launch command, run.
nlp_ssl_launch() {
    local command
    mapfile -t command < <(nlp_ssl_launch_command "$@")
    [[ ${#command[@]} -gt 0 ]] || return 2
    exec "${command[@]}"
}

# The output_dir=... among the recipe's arguments (run_status.json is there).
nlp_ssl_output_dir() {
    local arg out=
    for arg in "$@"; do
        [[ $arg == output_dir=* ]] && out=${arg#output_dir=}
    done
    echo "$out"
}

# The status a run left in its output_dir (finished, preempted, diverged, ...), or nothing.
nlp_ssl_run_status() {
    sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p' "$1/run_status.json" 2>/dev/null
}

nlp_ssl_job() {
    local out status code pid
    out=$(nlp_ssl_output_dir "$@")
    if [[ -z $out ]]; then
        echo "nlp_ssl: pass output_dir=<a folder every machine shares> (the requeue reads its run_status.json)" >&2
        return 2
    fi
    # Machine 0 is the first of the job's hosts, and this script runs on it: a port free there.
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    MASTER_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    export MASTER_ADDR MASTER_PORT NLP_SSL_ACCELERATE_CONFIG NLP_SSL_ACCELERATE
    export -f nlp_ssl_gpus_per_node nlp_ssl_launch_command nlp_ssl_launch
    echo "nlp_ssl: ${SLURM_NNODES} machines, machine 0 at $MASTER_ADDR:$MASTER_PORT, restart ${SLURM_RESTART_COUNT:-0}"
    # SIGTERM for this shell too (scancel --signal=TERM --full): wait for the run to save, then requeue.
    trap 'echo "nlp_ssl: SIGTERM: waiting for the run to save its checkpoint"' TERM
    srun --kill-on-bad-exit=1 --ntasks-per-node=1 bash -c 'nlp_ssl_launch "$@"' nlp_ssl "$@" &
    pid=$!
    while true; do  # a trapped signal ends `wait` early: wait again until srun has ended
        wait "$pid"
        code=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    status=$(nlp_ssl_run_status "$out")
    echo "nlp_ssl: srun exit code $code, run status '${status:-none}'"
    if [[ $status == preempted ]]; then
        scontrol requeue "$SLURM_JOB_ID" && echo "nlp_ssl: requeued job $SLURM_JOB_ID: it continues with resume=auto"
    fi
    return "$code"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    nlp_ssl_job "$@"
fi
