#!/usr/bin/env bash
# Sets up tinygpt-bench on a fresh Debian or Ubuntu machine: system packages, a virtual
# environment in .venv, and the package. Usage:
#   ./setup.sh            install for use (the wheel, as a user gets it)
#   ./setup.sh --test     install editable with the test and build extras (pytest, ziglang)
# System packages: python3-venv where venv is missing, and a Vulkan driver for the WebGPU
# backend where none exists (Debian's mesa-vulkan-drivers gives lavapipe, a CPU adapter).
# They are installed when running as root or with password-less sudo; otherwise the exact
# command is printed and setup carries on (the WebGPU backend then reports no adapter).
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
py=${PYTHON:-python3}

apt_install() {
  if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "setup: missing system packages: $*" >&2
    echo "setup: fix: sudo apt-get update && sudo apt-get install -y $*" >&2
    return 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get here; install the equivalent of: $* (a Vulkan loader and a CPU or GPU Vulkan driver)" >&2
    return 1
  fi
  echo "setup: installing system packages: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

need=()
"$py" -c 'import venv, ensurepip' 2>/dev/null || need+=("python3-venv")
have_vulkan_driver() {
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json ${VK_DRIVER_FILES:-}; do
    [ -e "$f" ] && return 0
  done
  return 1
}
have_vulkan_driver || need+=("libvulkan1" "mesa-vulkan-drivers")
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}" || { case " ${need[*]} " in *python3-venv*) exit 1;; esac; }
fi

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$mode" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test,build]'
else
  .venv/bin/python -m pip install -q .
fi
echo "setup: done ($(.venv/bin/python -c 'import tinygpt_bench; print("tinygpt-bench", tinygpt_bench.__version__)'))"
