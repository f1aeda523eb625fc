# pulmo — two commands on a fresh Debian machine:
#   make run    set up what is missing, build, open the viewer on the demo study
#   make test   set up what is missing, run the whole test suite
# Both are idempotent and fast when everything is already there.

CARGO ?= cargo
export XDG_RUNTIME_DIR ?= /tmp/pulmo-xdg-$(shell id -u)

.PHONY: setup run test lint fmt bench-load release full

setup:
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	@scripts/setup.sh

# Opens the viewer on the bundled synthetic demo (pass ARGS=PATH to open a study).
run: setup
	$(CARGO) build --release --bins
	$(CARGO) run --release --bin pulmo -- $(ARGS)

release: setup
	$(CARGO) build --release

# The whole test suite (unit, integration, real data in ../shared/data or $PULMO_DATA,
# headless wgpu on lavapipe, egui_kittest, Python interop checks, a slice of the CLI
# fuzzing corpus, a real single-node Slurm running a `pulmo batch` array).
test: setup
	$(CARGO) test --doc
	$(CARGO) test --all-targets
	scripts/fuzz_ci.sh
	scripts/slurm_ci.sh

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# For NVIDIA GPUs: all CUDA libraries, libtorch_cuda kept linked.
full:
	@scripts/setup.sh --torch full
	$(CARGO) build --release --features cuda

bench-load: release
	scripts/bench_load.sh
