# batchlab tasks. `just --list` shows them.

# Simulate a scenario (default: the quickstart) and write results under out/.
simulate scenario="scenarios/quickstart.toml" *args="":
    cargo run --release -- simulate {{scenario}} {{args}}

# Show what a scenario would run.
explain scenario="scenarios/quickstart.toml":
    cargo run --release -- explain {{scenario}}

# The CPU test suite (what CI runs).
test:
    cargo test

# GPU tests (kernels and the engine against CPU references): run on a machine with an NVIDIA GPU.
test-gpu:
    cargo test --release --locked --test gpu_kernels -- --ignored --test-threads=1
    cargo test --release --locked --test gpu_engine -- --ignored --test-threads=1 --skip transformers

# Calibrate this machine's GPU for a model and check the profile out of sample (needs an NVIDIA GPU).
calibrate model="qwen2.5-0.5b" *args="":
    cargo run --release -- calibrate --model {{model}} --check {{args}}

# Run a scenario on the GPU engine and in the simulator and report every metric's and every step's error (needs an
# NVIDIA GPU and a profile calibrated on it). Writes out/<scenario name>-validate/ unless --out is given.
validate scenario="scenarios/seed-matrix.toml" *args="":
    cargo run --release -- validate {{scenario}} {{args}}

# Kernel speed against the measured ceilings (needs an NVIDIA GPU).
bench-kernels model="qwen2.5-0.5b":
    cargo run --release -- bench-kernels --model {{model}}

# Whole engine steps against the physical floor (needs an NVIDIA GPU).
bench-engine model="qwen2.5-0.5b" *args="":
    cargo run --release -- bench-engine --model {{model}} {{args}}

# Redraw the report of a results folder.
report results:
    cargo run --release -- report {{results}}

# The simulator benchmark: one million requests.
bench:
    cargo run --release -- bench

# Formatting and lints, as CI expects them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings

# Time Hugging Face transformers on the seed matrix's bursts (scripts/hf_baseline.py; needs a GPU, torch and
# transformers 5.x) and put it beside a validate folder of the same card (`just validate` first, on this machine).
baseline validated="out/seed-matrix-validate" out="out/baseline":
    python3 scripts/hf_baseline.py --models qwen2.5-0.5b --out {{out}}/hf-qwen2.5-0.5b.csv
    python3 scripts/hf_baseline.py --models qwen2.5-1.5b --out {{out}}/hf-qwen2.5-1.5b.csv
    cargo run --release -- baseline-report --validated {{validated}} --baseline {{out}}/hf-qwen2.5-0.5b.csv --baseline {{out}}/hf-qwen2.5-1.5b.csv --out {{out}}/report.md
