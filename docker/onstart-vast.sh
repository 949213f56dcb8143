#!/usr/bin/env bash
# vast.ai on-start script for the vidpipe image (docs/deploy.md). Needed only in vast.ai's SSH or Jupyter launch
# modes, which replace the image's ENTRYPOINT with vast.ai's own; in the "args" (entrypoint) mode the image runs
# `vidpipe container` by itself. Put `vidpipe-onstart-vast` (this file, in the image) in the template's on-start
# field. It starts one `vidpipe container` in the background, logged to $VIDPIPE_LOG (default
# /workspace/vidpipe.log), unless one is running already; the job comes from the template's environment
# (-e VIDPIPE_INPUT=… -e B2_BUCKET=… -e VIDPIPE_AUTO_STOP=1) or /workspace/config.yaml, as in the entrypoint mode.
set -euo pipefail

log="${VIDPIPE_LOG:-/workspace/vidpipe.log}"
vidpipe="${VIDPIPE_BIN:-vidpipe}"
mkdir -p "$(dirname "$log")"

# the monitor's stop runs `vastai stop instance $CONTAINER_ID`, which needs an API key in the instance
if [[ -n "${VAST_API_KEY:-}" ]] && command -v vastai >/dev/null; then
    vastai set api-key "$VAST_API_KEY" >/dev/null
fi

pidfile="${log}.pid"
if [[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "vidpipe: already running (pid $(cat "$pidfile")), log $log"
    exit 0
fi
nohup "$vidpipe" container >>"$log" 2>&1 &
echo "$!" >"$pidfile"
echo "vidpipe: started (pid $!), log $log"
