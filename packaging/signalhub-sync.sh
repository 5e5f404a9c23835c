#!/bin/sh
# signalhub-sync command: runs the application installed in /usr/lib/signalhub-sync with the
# system's Node.js (>= 20.18). SIGNALHUB_SYNC_NODE names another node binary.
exec "${SIGNALHUB_SYNC_NODE:-/usr/bin/node}" /usr/lib/signalhub-sync/dist/cli/main.js "$@"
