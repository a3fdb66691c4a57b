#!/usr/bin/env bash
# Idempotent: the web UI's front-end libraries, installed from the npm
# registry at the exact versions in webui/package-lock.json and copied into
# webui/keel_webui/static/vendor/ (ignored by git; the engine wheel and so
# the appliance image pick them up from there). npm runs only when a
# vendored file is missing or the lock file changed since the last copy.
# noVNC is published on npm as CommonJS only: esbuild (from the same lock
# file) bundles its RFB client into one ES module the console page imports.
set -euo pipefail
cd "$(dirname "$0")/../webui"

vendor=keel_webui/static/vendor
# node_modules path -> name in $vendor
FILES=(
  "htmx.org/dist/htmx.min.js htmx.min.js"
)

stale=0
for pair in "${FILES[@]}"; do
  dest="$vendor/${pair#* }"
  if [ ! -s "$dest" ] || [ package-lock.json -nt "$dest" ]; then
    stale=1
  fi
done
bundle="$vendor/novnc-rfb.js"
if [ ! -s "$bundle" ] || [ package-lock.json -nt "$bundle" ] || [ novnc-entry.js -nt "$bundle" ]; then
  stale=1
fi
((stale)) || exit 0

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-webui: npm is missing (Debian: apt-get install npm); it installs webui/package-lock.json" >&2
  exit 1
fi

echo "setup-webui: installing webui/package-lock.json with npm ci"
npm ci --no-audit --no-fund --omit=dev --ignore-scripts --loglevel=error >/dev/null
mkdir -p "$vendor"
for pair in "${FILES[@]}"; do
  src="node_modules/${pair%% *}" dest="$vendor/${pair#* }"
  if [ ! -s "$src" ]; then
    echo "setup-webui: npm ci left no $src (is webui/package.json's version right?)" >&2
    exit 1
  fi
  # Through a temporary name so an interrupted copy never looks complete.
  cp "$src" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
done
# built beside the vendor folder, then moved in: its licence note keeps its name
build=$(mktemp -d node_modules/.keel-build.XXXXXX)
node_modules/.bin/esbuild novnc-entry.js --bundle --format=esm --minify --legal-comments=linked \
  --log-level=error --outfile="$build/novnc-rfb.js"
mv -f "$build/novnc-rfb.js.LEGAL.txt" "$vendor/novnc-rfb.js.LEGAL.txt"
mv -f "$build/novnc-rfb.js" "$bundle"
rmdir "$build"
