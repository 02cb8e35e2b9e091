#!/usr/bin/env bash
# Push and pull of a disk like a freshly installed VM's (see transfer.sh).
# Run alone: scripts/bench.sh --only transfer-system
TRANSFER_DISK=system exec bash "$(dirname "$0")/transfer.sh"
