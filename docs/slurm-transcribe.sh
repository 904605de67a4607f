#!/bin/bash
# Transcribe an archive as a Slurm array: one task per part, every task reading the same folder
# and writing the same output folder (`--shard K/N`). Submit with `sbatch docs/slurm-transcribe.sh`;
# change the array size, resources and paths here or override them on sbatch's command line
# (`sbatch --array=0-63 --export=ALL,SCANS=/data/scans ...`). tests/transcribe.rs submits this
# file to a real Slurm.
#SBATCH --job-name=transcribe --array=0-15 --cpus-per-task=4 --mem=4G --time=04:00:00
set -euo pipefail
SCANS=${SCANS:-/archive/scans}
OUT=${OUT:-/archive/text}
MODEL=${MODEL:-release/textrec-0.1.0.tar.gz}
TEXTREC=${TEXTREC:-textrec}
exec "$TEXTREC" transcribe "$SCANS" -o "$OUT" --recursive --resume --jobs "${SLURM_CPUS_PER_TASK:-1}" \
    --model "$MODEL" --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT"
