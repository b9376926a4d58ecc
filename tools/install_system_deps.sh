#!/usr/bin/env bash
# System libraries for headless simulator rendering, installed with apt-get when they are missing and we
# are root; otherwise the script says what to install (and exits 0: the simulators are optional extras).
#
#   MuJoCo (MetaWorld, LIBERO): Mesa's EGL and DRI drivers.
#   SAPIEN 3 (ManiSkill3, SIMPLER; extra `maniskill`): a Vulkan driver. Without a GPU that is Mesa's
#     lavapipe, which renders SAPIEN's scenes only from Mesa 25 on (Debian 12's Mesa 22.3 fails), so on
#     Debian bookworm it comes from bookworm-backports, together with the rest of Mesa (EGL/GL/GBM) so
#     that every Mesa library is of the same version.
#
# Idempotent: nothing is done when everything is there. LATBOT_SKIP_VULKAN=1 skips the Vulkan part.
set -euo pipefail

have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
is_root_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; }
# apt-get quietly: its output is shown only when it fails
quiet() {
  local log status=0
  log=$(mktemp)
  DEBIAN_FRONTEND=noninteractive "$@" >"$log" 2>&1 || status=$?
  [ "$status" -eq 0 ] || cat "$log" >&2
  rm -f "$log"
  return "$status"
}
apt_install() { quiet apt-get install -y -qq --no-install-recommends "$@"; }

# -- MuJoCo: Mesa EGL ------------------------------------------------------------------------------------
egl=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2)
missing=()
for p in "${egl[@]}"; do have "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if is_root_apt; then
    echo "installing headless rendering libraries: ${missing[*]}"
    quiet apt-get update -qq && apt_install "${missing[@]}"
  else
    echo "warning: missing ${missing[*]} (headless MuJoCo rendering); install them with your package manager" >&2
  fi
fi

# -- SAPIEN 3: Vulkan (lavapipe from Mesa >= 25) ---------------------------------------------------------
[ "${LATBOT_SKIP_VULKAN:-0}" = 1 ] && exit 0
mesa_major() { local v; v=$(version "$1"); v=${v#*:}; echo "${v%%.*}"; }
vulkan_ok() {
  have libvulkan1 && have mesa-vulkan-drivers || return 1
  local m; m=$(mesa_major mesa-vulkan-drivers)
  [ -n "$m" ] && [ "$m" -ge 25 ] 2>/dev/null
}
vulkan_ok && exit 0
# Mesa's libraries together (they depend on each other at the exact version): lavapipe + EGL/GL/GBM.
mesa=(mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri libglx-mesa0 libgbm1 libgles2)
codename=""
[ -r /etc/os-release ] && codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if is_root_apt && [ "$codename" = bookworm ]; then
  list=/etc/apt/sources.list.d/latbot-bookworm-backports.list
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" >"$list"
  fi
  echo "installing Mesa 25's Vulkan driver (lavapipe, for SAPIEN/ManiSkill3) from bookworm-backports"
  quiet apt-get update -qq && apt_install -t bookworm-backports "${mesa[@]}"
elif is_root_apt && apt-cache policy mesa-vulkan-drivers 2>/dev/null | grep -q "Candidate: \(1:\)\?2[5-9]\."; then
  echo "installing Mesa's Vulkan driver (lavapipe, for SAPIEN/ManiSkill3)"
  apt_install mesa-vulkan-drivers libvulkan1
else
  have_mesa=$(version mesa-vulkan-drivers)
  echo "warning: ManiSkill3/SIMPLER rendering without a GPU needs Mesa >= 25's Vulkan driver (lavapipe) and the" \
    "Vulkan loader (Debian/Ubuntu: mesa-vulkan-drivers libvulkan1; on Debian 12 from bookworm-backports:" \
    "apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1 libegl-mesa0 libgl1-mesa-dri" \
    "libglx-mesa0 libgbm1); found: ${have_mesa:-none}. With an NVIDIA GPU its driver's Vulkan ICD is enough." >&2
fi
