#!/usr/bin/env bash
# Sets up tinygpt-bench on a fresh Debian or Ubuntu machine: system packages, a virtual
# environment in .venv, and the package. Usage:
#   ./setup.sh            install for use (the wheel, as a user gets it)
#   ./setup.sh --test     install editable with the test and build extras (pytest, ziglang)
# System packages: python3-venv where venv is missing, Chromium (Debian's `chromium`) for the
# browser backend wasm-chrome where no browser is found, and a Vulkan driver that both WebGPU
# implementations accept where there is none: Mesa's lavapipe (a CPU adapter) from
# mesa-vulkan-drivers 24 or newer. Dawn (the webgpu-dawn backend) refuses Mesa 22's lavapipe
# ("Vulkan shaderUniform*ArrayDynamicIndexing required"), which is Debian 12's own; there setup
# adds Debian's bookworm-backports suite and installs Mesa 25 from it (wgpu-native works with
# both). Ubuntu 24.04's own Mesa (24 or newer) is taken as it is. A machine with a GPU driver
# already (an NVIDIA ICD, say) keeps it; lavapipe is added beside it only where Mesa is too old.
# Packages are installed when running as root or with password-less sudo; otherwise the exact
# commands are printed and setup carries on. At the end it asks both implementations for an
# adapter and says what each found.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
py=${PYTHON:-python3}
MESA_MIN=24  # the oldest Mesa whose lavapipe Dawn accepts (Debian 12's 22.3 is refused)

sudo_cmd() {  # prints the prefix for root commands, or fails where there is no way to be root
  if [ "$(id -u)" = 0 ]; then echo ""; elif sudo -n true 2>/dev/null; then echo "sudo -n"; else return 1; fi
}

apt_install() {  # apt_install [-t SUITE] PACKAGE...
  local sudo
  if ! command -v apt-get >/dev/null; then
    echo "setup: no apt-get here; install the equivalent of: $* (a Vulkan loader and a Vulkan driver: Mesa $MESA_MIN+ lavapipe or a GPU's)" >&2
    return 1
  fi
  if ! sudo=$(sudo_cmd); then
    echo "setup: missing system packages: $*" >&2
    echo "setup: fix: sudo apt-get update && sudo apt-get install -y $*" >&2
    return 1
  fi
  if [ "$1" = -t ]; then echo "setup: installing system packages from $2: ${*:3}"; else echo "setup: installing system packages: $*"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

os_field() { (. /etc/os-release 2>/dev/null && eval "echo \${$1:-}"); }

mesa_major() {  # the installed mesa-vulkan-drivers' major version, or nothing
  dpkg-query -W -f='${Status} ${Version}\n' mesa-vulkan-drivers 2>/dev/null \
    | awk '$3 == "installed" { split($4, v, /[.:~+-]/); print (v[1] ~ /^[0-9]+$/ && $4 !~ /^[0-9]+:/) ? v[1] : v[2] }'
}

have_vulkan_driver() {
  ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || return 1
  for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json ${VK_DRIVER_FILES:-}; do
    [ -e "$f" ] && return 0
  done
  return 1
}

need=()
"$py" -c 'import venv, ensurepip' 2>/dev/null || need+=("python3-venv")
mesa=$(mesa_major || true)
if ! have_vulkan_driver || { [ -n "$mesa" ] && [ "$mesa" -lt "$MESA_MIN" ]; }; then
  need+=("libvulkan1" "mesa-vulkan-drivers")
fi
if [ ${#need[@]} -gt 0 ]; then
  case " ${need[*]} " in *" mesa-vulkan-drivers "*) vk=1;; *) vk=0;; esac
  base=("${need[@]}")
  if [ "$vk" = 1 ] && [ "$(os_field ID)" = debian ] && [ "$(os_field VERSION_CODENAME)" = bookworm ]; then
    # Debian 12: Mesa 22.3 in the release, Mesa 25 in bookworm-backports
    base=(); for p in "${need[@]}"; do case $p in libvulkan1|mesa-vulkan-drivers) ;; *) base+=("$p");; esac; done
    list=/etc/apt/sources.list.d/tinygpt-bench-backports.list
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ ; then
      if sudo=$(sudo_cmd); then
        echo "setup: adding Debian's bookworm-backports suite ($list) for Mesa $MESA_MIN+"
        echo "deb http://deb.debian.org/debian bookworm-backports main" | $sudo tee "$list" >/dev/null
      else
        echo "setup: fix: echo 'deb http://deb.debian.org/debian bookworm-backports main' | sudo tee $list" >&2
      fi
    fi
    [ ${#base[@]} -eq 0 ] || apt_install "${base[@]}" || { case " ${base[*]} " in *python3-venv*) exit 1;; esac; }
    apt_install -t bookworm-backports libvulkan1 mesa-vulkan-drivers || true
  else
    apt_install "${base[@]}" || { case " ${base[*]} " in *python3-venv*) exit 1;; esac; }
  fi
  mesa=$(mesa_major || true)
  if [ -n "$mesa" ] && [ "$mesa" -lt "$MESA_MIN" ]; then
    echo "setup: mesa-vulkan-drivers is $mesa.x here; Dawn (backend webgpu-dawn) needs Mesa $MESA_MIN or newer" \
         "(wgpu-native, backend webgpu, works with it). Fix: install mesa-vulkan-drivers $MESA_MIN+ from your" \
         "distribution's backports or updates." >&2
  fi
fi

# Chromium for the browser backends (wasm-chrome): the system's own, never downloaded by the
# harness. Debian's `chromium` package (Chromium 133+ has Memory64 on by default); elsewhere
# the fix is printed (Ubuntu's chromium package is a snap, which containers cannot run).
have_browser() {
  [ -n "${TINYGPT_BENCH_BROWSER:-}" ] && return 0
  [ -x /usr/lib/chromium/chromium ] && return 0
  for b in chromium chromium-browser google-chrome-stable google-chrome; do command -v "$b" >/dev/null && return 0; done
  return 1
}
if ! have_browser; then
  if [ "$(os_field ID)" = debian ]; then
    apt_install chromium || echo "setup: the wasm-chrome backend needs Chromium: sudo apt-get install chromium" >&2
  else
    echo "setup: no Chromium found; the wasm-chrome backend needs Chromium 133+ (a distribution package, not a" \
         "snap) or TINYGPT_BENCH_BROWSER=/path/to/chrome; the other backends work without it" >&2
  fi
fi

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$mode" = "--test" ]; then
  .venv/bin/python -m pip install -q -e '.[test,build]'
else
  .venv/bin/python -m pip install -q .
fi
echo "setup: done ($(.venv/bin/python -c 'import tinygpt_bench; print("tinygpt-bench", tinygpt_bench.__version__)'))"
# what each WebGPU implementation finds (a diagnosis, not a failure: the wasm engine needs none)
.venv/bin/python - <<'PY' || true
from tinygpt_bench.engines.webgpu.runtime import NO_ADAPTER_FIX, adapters
from tinygpt_bench.host import quiet_mesa

quiet_mesa()
for impl, backend in (("wgpu-native", "webgpu"), ("dawn", "webgpu-dawn")):
    try:
        found = [f"{a.info['device']} ({a.info['adapter_type']}, {a.info['backend_type']})" for a in adapters(impl)]
    except Exception as e:
        found, why = [], f"{type(e).__name__}: {e}"
    else:
        why = "no adapter"
    print(f"setup: backend {backend} ({impl}): " + ("; ".join(found) if found else f"{why}; fix: {NO_ADAPTER_FIX[impl]}"))
from tinygpt_bench import browser
try:
    path = browser.browser_path()
    print(f"setup: backend wasm-chrome: {browser.browser_version(path)['browser']} ({path})")
except Exception as e:
    print(f"setup: backend wasm-chrome: {e}")
PY
