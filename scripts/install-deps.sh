#!/usr/bin/env bash
# Installs the Debian packages webrtcd needs, only those missing. Idempotent; uses sudo only
# when not root. Usage: scripts/install-deps.sh run|test
set -euo pipefail

RUN_DEBS=(
  pkg-config
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-libav gstreamer1.0-alsa
  gstreamer1.0-tools libnice-dev libgstrtspserver-1.0-dev ca-certificates
)
TEST_DEBS=(
  curl procps iproute2 openssl util-linux chromium chromium-driver firefox-esr
  python3 python3-venv systemd dpkg-dev binutils librsvg2-bin nftables coturn ffmpeg redis-server
  espeak-ng python3-numpy python3-dev pulseaudio pulseaudio-utils libasound2-plugins
)

case "${1:-run}" in
  run) wanted=("${RUN_DEBS[@]}") ;;
  test) wanted=("${RUN_DEBS[@]}" "${TEST_DEBS[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "Installing missing Debian packages: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# An independent WebRTC stack for the interop tests (aiortc: ECDSA-only DTLS), from PyPI,
# in a venv under target/ so the system Python is left alone.
if [ "${1:-run}" = test ]; then
  venv="$(dirname "$0")/../target/interop-venv"
  if ! "$venv/bin/python" -c "import aiortc, websockets" >/dev/null 2>&1; then
    echo "Installing aiortc into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check aiortc==1.16.0 websockets==17.4
    # Import once now: the first import compiles bytecode, too slow inside a timed test.
    "$venv/bin/python" -c "import aiortc, av, websockets"
  fi
  # Speech quality for the intercom's loss measurements: PESQ (ITU-T P.862, built from its
  # source: python3-dev) and STOI.
  if ! "$venv/bin/python" -c "import pesq, pystoi" >/dev/null 2>&1; then
    echo "Installing pesq and pystoi into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pesq==0.0.4 pystoi==0.4.1
    "$venv/bin/python" -c "import pesq, pystoi, scipy"
  fi
fi

# Published WebRTC client libraries (npm) that the browser tests load into Chromium: the
# versions pinned in tests/web/package-lock.json. Debian's npm when the machine has none.
if [ "${1:-run}" = test ]; then
  web="$(dirname "$0")/../tests/web"
  if [ ! -f "$web/node_modules/whip-whep/whep.js" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      sudo=""
      if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm
    fi
    echo "Installing the test players' npm packages into $web/node_modules"
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo (Rust 1.95) is required: https://rustup.rs" >&2
  exit 1
fi

# The packaging test builds the .deb with cargo-deb (from crates.io).
if [ "${1:-run}" = test ] && ! cargo deb --version >/dev/null 2>&1; then
  echo "Installing cargo-deb"
  cargo install --quiet --locked cargo-deb --version 3.8.0
fi
