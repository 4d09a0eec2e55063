#!/usr/bin/env bash
# One call of the translators' GPU campaign: install the carried wheels if the machine lacks
# them, unpack the carried training material, train both direction models side by side on the
# one GPU (resuming the runs of an earlier call), and export their weights (fp16, the layout of
# umust_cli/weights/) and the logs. docs/runbooks.md, "GPU campaign: the translators", has the
# whole procedure.
#
#   scripts/gpu-translator.sh PACK RUNS EXPORT [SECONDS]
#
# PACK     a folder of scripts/gpu_pack_translator.py pack (data.tar.bz2, pack.json, wheels/)
# RUNS     outside the repository (/tmp/umust-campaign): a device call replaces the carried
#          folders, so only a path outside survives between warm calls. Holds data/ (the unpacked
#          corpus), site/ (the installed wheels), one run folder per direction and its log.
# EXPORT   the call's output folder ($OUT): translator-i2a/ and translator-a2i/ (model.safetensors,
#          config.json, vocabulary.json; each file < 16 MiB) and logs.tgz: 7 files
# SECONDS  this call's wall-clock budget from the script's start (default 570)
#
# The trainers run in their own process session, so that they outlive the call (a device call
# kills what it leaves running, except such processes): with KEEP_TRAINING=1 the call exports
# the runs' last saves at its deadline and leaves the trainers running for the next call, which
# finds them (RUNS/DIRECTION.pid) instead of starting new ones. Without it, the call stops them
# (SIGTERM: the trainer saves, then stops) 40 s before its deadline and exports. The trainers'
# own limit is MINUTES (13) from their start. So one data load and one CUDA start-up serve
# the whole campaign, and nothing is lost between calls but the transfer time.
#
# A fresh run starts from the shipped weights of its direction (registry kind translator-i2a /
# translator-a2i) when the install has them, else from scratch; a run already in RUNS resumes.
# Saves every SAVE_SECONDS (120) at the step rate measured by the run's last call, or at the
# estimate STEPS_PER_S (10) in its first call.
#
# Environment: PYTHON (python3), DIRECTIONS ("i2a a2i"), PRESET (small), DEVICE (cuda),
# I2A_TASKS / A2I_TASKS (the campaign's curricula, below), TRAIN_ARGS (more trainer options; the
# same on every call of a run: a resumed run refuses changed ones), FORCE_WHEELS=1 (install
# the wheels even where the packages import). DRY=1 is the CPU dry run: PRESET (tiny), cpu,
# MAX_STEPS (3) steps, the same steps otherwise.
set -euo pipefail
t0=$(date +%s)
pack=${1:?pack folder}; runs=${2:?runs folder}; export_dir=${3:?export folder}; budget=${4:-570}
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
helper=("$py" "$repo/scripts/gpu_pack_translator.py")
directions=${DIRECTIONS:-i2a a2i}
save_seconds=${SAVE_SECONDS:-120}
# The paper's direct tasks ramp in between steps 15k-50k (i2a) and 40k-70k (a2i); a campaign
# makes a few thousand steps, so they ramp in over its first steps instead (the dry run: at step 2).
ramp=$([ "${DRY:-0}" = 1 ] && echo 1:2 || echo 500:3000)
i2a_tasks=${I2A_TASKS:-omr,midi2audio,image2audio@$ramp}
a2i_tasks=${A2I_TASKS:-transcription,lmx2image,audio2image@$ramp}
if [ "${DRY:-0}" = 1 ]; then
  preset=${PRESET:-tiny}; device=cpu; limit=(--max-steps "${MAX_STEPS:-3}"); steps_per_s=1
  common=(--batch-tokens 4096 --warmup-steps 5 --eval-every 2 --no-codebook-init --precision fp32)
else
  preset=${PRESET:-small}; device=${DEVICE:-cuda}; limit=(); steps_per_s=${STEPS_PER_S:-10}
  common=(--batch-tokens 32768 --lr 5e-4 --warmup-steps 300 --eval-every 2000)
fi
# keep-best on the valid loss (cheap); the OMR SER is decoded on the CPU afterwards
common+=(--best-metric loss --eval-items 0)
mkdir -p "$runs" "$export_dir"
runs=$(cd "$runs" && pwd)

# 1. the packages the machine lacks (KINDS.md: pretty_midi, mido, linearized-musicxml, importlib_resources)
export PYTHONPATH="$repo:$runs/site${PYTHONPATH:+:$PYTHONPATH}"
if [ "${FORCE_WHEELS:-0}" = 1 ] || ! "$py" -c "import pretty_midi, mido, lmx, importlib_resources" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --find-links "$pack/wheels" --target "$runs/site" "$pack"/wheels/*.whl
fi
"$py" -c "import pretty_midi, mido, lmx, umust_cli.cli.main"

# 2. the training material, once per machine
"${helper[@]}" unpack "$pack" "$runs/data"

# 3. a trainer per direction unless one is still running from an earlier call
running() {   # the trainer of direction $1 is alive (a zombie, whose parent call has ended, is not)
  local pid; pid=$(cat "$runs/$1.pid" 2>/dev/null) || return 1
  [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}
for d in $directions; do
  if running "$d"; then echo "$d: still training (pid $(cat "$runs/$d.pid"))"; continue; fi
  run=$runs/$d; init=()
  if [ ! -f "$run/train_state.pt" ] && [ "$preset" = small ]; then
    shipped=$("${helper[@]}" init-weights "translator-$d")
    if [ -n "$shipped" ]; then init=(--init "$shipped"); fi
  fi
  every=$("${helper[@]}" save-every "$run" --seconds "$save_seconds" --default $((steps_per_s * save_seconds)))
  tasks_var=${d}_tasks
  # shellcheck disable=SC2086  # TRAIN_ARGS is a word list
  setsid "$py" -m umust_cli train translator --direction "$d" --tasks "${!tasks_var}" --preset "$preset" \
    --data "$runs/data" -o "$run" --device "$device" --max-minutes "${MINUTES:-13}" "${limit[@]}" \
    --save-every "$every" "${common[@]}" "${init[@]}" ${TRAIN_ARGS:-} --quiet --json \
    >>"$runs/$d.log" 2>&1 </dev/null &
  echo $! >"$runs/$d.pid"
  echo "$d: started (save every $every steps${init:+, from ${init[1]}})"
done

# 4. wait for the trainers, or until the deadline: then leave them running or stop them
deadline=$((t0 + budget - 40))
while [ "$(date +%s)" -lt "$deadline" ]; do
  alive=0
  for d in $directions; do if running "$d"; then alive=1; fi; done
  [ "$alive" = 1 ] || break
  sleep 2
done
if [ "${KEEP_TRAINING:-0}" != 1 ]; then
  for d in $directions; do if running "$d"; then kill -TERM "$(cat "$runs/$d.pid")"; fi; done
  for _ in $(seq 30); do
    alive=0
    for d in $directions; do if running "$d"; then alive=1; fi; done
    [ "$alive" = 1 ] || break
    sleep 1
  done
fi

# 5. export the runs' last saves (the best valid loss when there is one) and the logs
status=0
for d in $directions; do
  tail -3 "$runs/$d.log" || true
  cp "$runs/$d.log" "$export_dir/$d.log" 2>/dev/null || true
  cp "$runs/$d/train_log.jsonl" "$export_dir/$d.train_log.jsonl" 2>/dev/null || true
done
# shellcheck disable=SC2086  # directions is a word list
"${helper[@]}" export "$runs" "$export_dir" $directions || status=1
cp "$pack/pack.json" "$export_dir/pack.json"
nvidia-smi >"$export_dir/nvidia-smi.txt" 2>&1 || true
# shellcheck disable=SC2086
"${helper[@]}" summary "$runs" "$export_dir" $directions --started "$t0" || status=1
# one archive of the logs: a device call brings back at most 8 files
(cd "$export_dir" && tar czf logs.tgz ./*.log ./*.train_log.jsonl pack.json nvidia-smi.txt summary.json \
  && rm -f ./*.log ./*.train_log.jsonl pack.json nvidia-smi.txt summary.json)
exit $status
