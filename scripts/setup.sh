#!/usr/bin/env bash
# Install everything umust needs on a fresh Debian/Ubuntu machine:
# FluidSynth + piano soundfonts, ffmpeg and LilyPond (apt), then a virtual environment in .venv
# with umust and its test dependencies. Safe to re-run: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fluidsynth libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont
              csound-soundfont opl3-soundfont ffmpeg lilypond)
VENV=${UMUST_VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -qq --no-cache-dir --upgrade pip setuptools wheel
echo "setup: installing umust into $VENV (first run downloads torch: several GB)"
"$VENV/bin/python" -m pip install -qq --no-cache-dir -e '.[test]'
# aiSFX ships the offline audio embedding used by `umust eval fad`; its metadata pins
# ancient numpy/librosa, so it is installed without its (already satisfied) dependencies.
"$VENV/bin/python" -m pip install -qq --no-cache-dir --no-deps aisfx==0.1.2
"$VENV/bin/umust" --version
