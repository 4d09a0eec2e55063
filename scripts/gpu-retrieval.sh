#!/usr/bin/env bash
# Train the retrieval model's `paper` preset on one GPU from features packed by
# scripts/gpu_pack_retrieval.py, resumably; every call continues where the last one stopped.
#
#   scripts/gpu-retrieval.sh PACKS RUN EXPORT [MINUTES]
#
# PACKS   folder holding every pack.tar.NNN part (copy each carried part there first: a device
#         call carries at most 64 MiB, so the parts come over several back-to-back calls)
# RUN     the run folder, outside the repository on a device machine (/tmp/runs/...): each call
#         replaces the carried folders and drops other ignored ones, only a path outside survives
# EXPORT  gets model/ (the last checkpoint), best/ (the best on the validation corpus so far) and
#         train_log.jsonl: what must come back
# MINUTES wall-clock training budget of this call (default 8)
#
# The corpora's manifests are written back at the paths they were packed from, so the run reads
# the same --data list as the pack. DATA (the --data list, in pack order), VAL and TRAIN_ARGS
# (batch size, augmentations...) must be the same on every call of one run: a resumed run
# refuses other options. UMUST selects the umust command; DRY=1 is the CPU dry run (2 steps).
set -euo pipefail
packs=${1:?packs folder}; run=${2:?run folder}; export_dir=${3:?export folder}; minutes=${4:-8}
umust=${UMUST:-umust}
py=${PYTHON:-python3}
read -r -a data <<<"${DATA:?DATA: the --data corpora in pack order}"
data_args=(); for d in "${data[@]}"; do data_args+=(--data "$d"); done
if [ "${DRY:-0}" = 1 ]; then budget=(--max-steps 2); device=cpu; workers=0
else budget=(--max-minutes "$minutes"); device=cuda; workers=${WORKERS:-12}; fi
if [ ! -d "$run/cache" ]; then
  "$py" scripts/gpu_pack_retrieval.py unpack "$packs" --run "$run"
fi
mkdir -p "$export_dir"
# shellcheck disable=SC2086  # TRAIN_ARGS is a word list
$umust train retrieval "${data_args[@]}" --val-data "${VAL:?VAL: the validation corpus}" -o "$run" \
  --config paper --device "$device" --workers "$workers" "${budget[@]}" --quiet --json ${TRAIN_ARGS:-} \
  | tee "$export_dir/result.json"
mkdir -p "$export_dir/model"
cp "$run/model.safetensors" "$run/config.json" "$export_dir/model/"
if [ -d "$run/best" ]; then mkdir -p "$export_dir/best"; cp "$run/best/"* "$export_dir/best/"; fi
cp "$run/train_log.jsonl" "$export_dir/"
du -sh "$export_dir"/*
