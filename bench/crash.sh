#!/bin/bash
# The crash agent: records when it started, lives $2 seconds (default 0), records when it exits,
# then exits 1. Times are bash's $EPOCHREALTIME: no subprocess, microseconds, the clock that
# Python's time.time() reads.
echo "S $EPOCHREALTIME" >> "$1"
if [ "${2:-0}" != 0 ]; then sleep "$2"; fi
echo "E $EPOCHREALTIME" >> "$1"
exit 1
