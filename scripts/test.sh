#!/usr/bin/env bash
# The project's one test command (the README names it; CI runs it).
#
#   scripts/test.sh            formatting, lints, every workspace test, then
#                              the real-kernel PHC suite in a qemu guest
#   NTPD_HOST_SKIP_VM=1 ...    everything but the guest suites
#   NTPD_HOST_SKIP_PROMETHEUS=1 ...
#                              without the metrics exporter's check against a
#                              real Prometheus server (tests/prometheus/run)
#   NTPD_HOST_SKIP_PACKAGE=1   without the package test (the .deb installed in
#                              a Debian guest with systemd)
#
# Nothing here starts the ntpd-rs daemon on this machine: the host tests use
# `bridge` (workers only) and `validate` (parsing only); the closed loop with
# the daemon steering a clock runs only inside the guest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked

if [[ -z "${NTPD_HOST_SKIP_PROMETHEUS:-}" ]]; then
    step "metrics exporter scraped by a real Prometheus (loopback)"
    tests/prometheus/run
fi

if [[ -z "${NTPD_HOST_SKIP_VM:-}" && -x tests/vm/run ]]; then
    step "real-kernel PHC suite (qemu guest)"
    tests/vm/run
fi

if [[ -z "${NTPD_HOST_SKIP_VM:-}${NTPD_HOST_SKIP_PACKAGE:-}" ]]; then
    step "package test: scripts/build-deb, then the .deb in a Debian guest with systemd"
    tests/vm/systemd/run tests/vm/systemd/package
fi
