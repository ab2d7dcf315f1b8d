# batchlab tasks. `just --list` shows them.

# Simulate a scenario (default: the quickstart) and write results under out/.
simulate scenario="scenarios/quickstart.toml" *args="":
    cargo run --release -- simulate {{scenario}} {{args}}

# Show what a scenario would run.
explain scenario="scenarios/quickstart.toml":
    cargo run --release -- explain {{scenario}}

# The CPU test suite (what CI runs).
test:
    cargo test --locked

# GPU tests: run on a machine with an NVIDIA GPU.
test-gpu:
    cargo test --release --locked -- --ignored

# The simulator benchmark: one million requests.
bench:
    cargo run --release -- bench

# Formatting and lints, as CI expects them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings
