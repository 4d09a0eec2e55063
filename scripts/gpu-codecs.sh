#!/usr/bin/env bash
# Train the image (RQ-VAE) and audio (DAC) codecs in one warm GPU session, resumably, and
# export shippable fp16 weights. Every step can be rerun: it resumes where it stopped.
#
#   scripts/gpu-codecs.sh CORPUS RUNS EXPORT [MINUTES]
#
# CORPUS  a corpus of `umust dataset build` (built here first if it does not exist: the
#         WAVs are too big to carry to a device machine, so build it there)
# RUNS    run folders (train_state.pt stays here; only EXPORT needs to come back)
# EXPORT  gets image-codec/ and audio-codec/ (fp16, the layout of umust_cli/weights/)
# MINUTES wall-clock budget of each training call (default 8; call again to continue)
#
# UMUST=... selects the umust command (default: umust on PATH). DRY=1 is the CPU dry run:
# tiny configs, 3 steps each, on whatever CORPUS holds (e.g. `umust dataset build examples`).
set -euo pipefail
corpus=${1:?corpus folder}; runs=${2:?runs folder}; export_dir=${3:?export folder}; minutes=${4:-8}
umust=${UMUST:-umust}
if [ "${DRY:-0}" = 1 ]; then
  size=tiny; budget=(--max-steps 3); device=cpu; audio_batch=(--batch-size 2)
else
  size=small; budget=(--max-minutes "$minutes"); device=cuda; audio_batch=(--batch-size 72)
fi

if [ ! -f "$corpus/manifest.jsonl" ]; then
  $umust dataset build ../shared/corpora/*/kern -o "$corpus" --workers "$(nproc)"
fi
mkdir -p "$runs" "$export_dir"
$umust train codec image --data "$corpus" -o "$runs/image-$size" --config "$size" --device "$device" \
  "${budget[@]}" --save-every 500 --eval-every 1000 --quiet --export "$export_dir/image-codec"
$umust train codec audio --data "$corpus" -o "$runs/audio-$size" --config "$size" --device "$device" \
  "${audio_batch[@]}" "${budget[@]}" --save-every 500 --quiet --export "$export_dir/audio-codec"
du -sh "$export_dir"/*
