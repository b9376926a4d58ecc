#!/usr/bin/env bash
# System libraries for headless MuJoCo rendering (MetaWorld, LIBERO): Mesa's EGL and DRI drivers.
# Installs them with apt-get when they are missing and we are root; otherwise says what to install.
set -euo pipefail
packages=(libegl1 libegl-mesa0 libgl1-mesa-dri libgles2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing headless rendering libraries: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing ${missing[*]} (headless MuJoCo rendering); install them with your package manager" >&2
fi
