#!/usr/bin/env bash
# Train the image (RQ-VAE) and audio (DAC) codecs side by side on one GPU, resumably, and
# export shippable fp16 weights. Every call resumes where the last one stopped.
#
#   scripts/gpu-codecs.sh DATA RUNS EXPORT [MINUTES]
#
# DATA    a folder packed by scripts/gpu_pack.py (images/ and audio/; carryable to a device
#         machine, which has no FluidSynth or Verovio to build a corpus), or a built corpus
# RUNS    run folders (train_state.pt stays here; only EXPORT needs to come back). On a device
#         machine put them outside the repository (/tmp/runs): each call replaces the carried
#         folders and drops other ignored ones, so only a path outside survives between warm calls
# A fresh run starts from the shipped weights (umust_cli/weights/{image,audio}-codec, or
# INIT_DIR/...) when they exist and match the size; a run already in RUNS resumes instead.
# EXPORT  gets image-codec/ and audio-codec/ (fp16, the layout of umust_cli/weights/) and logs
# MINUTES wall-clock budget of each trainer in this call (default 8; call again to continue)
#
# UMUST=... selects the umust command (default: umust on PATH). DRY=1 is the CPU dry run:
# tiny configs, 3 steps each. IMAGE_ARGS (default: --ink-weight 1, as the shipped codec) and
# AUDIO_ARGS add trainer options.
set -euo pipefail
data=${1:?data folder}; runs=${2:?runs folder}; export_dir=${3:?export folder}; minutes=${4:-8}
umust=${UMUST:-umust}
if [ "${DRY:-0}" = 1 ]; then
  size=tiny; budget=(--max-steps 3); device=cpu; audio_batch=(--batch-size 2)
else
  size=small; budget=(--max-minutes "$minutes"); device=cuda; audio_batch=(--batch-size 72)
fi
image_data=$data; audio_data=$data
if [ ! -f "$data/manifest.jsonl" ]; then image_data=$data/images; audio_data=$data/audio; fi
mkdir -p "$runs" "$export_dir"
init_dir=${INIT_DIR:-umust_cli/weights}
init_image=(); init_audio=()
if [ "$size" = small ] && [ -f "$init_dir/image-codec/model.safetensors" ]; then
  init_image=(--init "$init_dir/image-codec"); fi
if [ "$size" = small ] && [ -f "$init_dir/audio-codec/model.safetensors" ]; then
  init_audio=(--init "$init_dir/audio-codec"); fi
# shellcheck disable=SC2086  # IMAGE_ARGS / AUDIO_ARGS are word lists
$umust train codec image --data "$image_data" -o "$runs/image-$size" --config "$size" --device "$device" \
  "${budget[@]}" "${init_image[@]}" --save-every 500 --quiet --export "$export_dir/image-codec" ${IMAGE_ARGS---ink-weight 1} \
  >"$export_dir/image.log" 2>&1 &
image_pid=$!
# shellcheck disable=SC2086
$umust train codec audio --data "$audio_data" -o "$runs/audio-$size" --config "$size" --device "$device" \
  "${audio_batch[@]}" "${budget[@]}" "${init_audio[@]}" --save-every 500 --quiet \
  --export "$export_dir/audio-codec" ${AUDIO_ARGS:-} \
  >"$export_dir/audio.log" 2>&1 &
audio_pid=$!
status=0
wait "$image_pid" || { status=1; echo "image codec training failed:"; }
tail -3 "$export_dir/image.log"
wait "$audio_pid" || { status=1; echo "audio codec training failed:"; }
tail -3 "$export_dir/audio.log"
for run in "$runs/image-$size" "$runs/audio-$size"; do
  cp "$run/train_log.jsonl" "$export_dir/$(basename "$run").train_log.jsonl" 2>/dev/null || true
done
# one archive of the logs: a device call brings back at most 8 files
(cd "$export_dir" && tar czf logs.tgz ./*.log ./*.train_log.jsonl && rm -f ./*.log ./*.train_log.jsonl)
du -sh "$export_dir"/*
exit $status
