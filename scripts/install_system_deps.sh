#!/usr/bin/env bash
# System libraries the app and the headless GUI tests need (Xvfb, GL, xcb), from Debian/Ubuntu packages.
# Installs them when missing and we may (root or passwordless sudo); otherwise says what to install.
set -euo pipefail
pkgs=(xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libxkbcommon-x11-0 libxcb-cursor0
      libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0
      libxcb-xfixes0 libxcb-xkb1 libx11-xcb1 libfontconfig1 libdbus-1-3 libglib2.0-0)
command -v dpkg-query >/dev/null || { echo "system-deps: not a Debian-like system; install Xvfb and OpenGL/xcb libraries yourself"; exit 0; }
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else
  echo "system-deps: please run: sudo apt-get install -y ${missing[*]}"; exit 1; fi
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
