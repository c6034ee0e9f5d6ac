#!/usr/bin/env bash
# Visualize APT for one or more images from any directory:
#   ./run_visualize.sh IMAGE [apt-viz options]      e.g.  run_visualize.sh cat.jpg -m budget --alpha 0.3
# Uses the project's .venv (created and installed as the README says on first use), then runs apt-viz.
# Paths are taken relative to the directory you call it from. APT_VIZ_PYTHON picks the python that
# creates the venv (default python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$repo/.venv"

if [[ $# -eq 0 ]]; then
  echo "usage: $(basename "$0") IMAGE [IMAGE|FOLDER ...] [apt-viz options]   (see: $(basename "$0") --help)" >&2
  exit 2
fi

if ! "$venv/bin/python" -c "import apt_viz.cli" >/dev/null 2>&1; then
  echo "run_visualize: setting up $venv (first run only)..." >&2
  "${APT_VIZ_PYTHON:-python3}" -m venv "$venv"
  # torch/torchvision first and pinned, exactly as the README's install line.
  "$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1 -e "$repo" >&2
fi

exec "$venv/bin/python" -m apt_viz "$@"
