# gleam_ros: `make demo` runs the main job on built-in data, `make test` the test suite.
# Both set up the environment first when it is missing or stale (tools/setup_env.sh).
PY := .venv/bin/python
MAP ?=

.PHONY: setup test demo lint clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest

lint: setup
	$(PY) -m ruff check gleam_ros training test tools

clean:
	rm -rf build .venv demo_out
