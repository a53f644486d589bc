#!/usr/bin/env bash
# Installs what the quality benchmarks and their data test render with: Debian's fluidsynth and
# the FluidR3 General MIDI sound font (fluid-soundfont-gm). Does nothing if they are there.
# Needs root and apt-get (as on CI and the project's machines); elsewhere it says what to do.
set -euo pipefail
if command -v fluidsynth >/dev/null 2>&1 && [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing fluidsynth and fluid-soundfont-gm (for the quality benchmarks' data)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -q fluidsynth fluid-soundfont-gm >/dev/null; }
  exit 0
fi
echo "install_fluidsynth: fluidsynth or the GM sound font is missing; install them (Debian:" \
     "sudo apt-get install fluidsynth fluid-soundfont-gm) for the quality benchmarks" >&2
exit 1
