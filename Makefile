# gleam_ros: `make demo` runs the main job on built-in data, `make test` the test suite.
# Both set up the environment first when it is missing or stale (tools/setup_env.sh).
PY := .venv/bin/python
MAP ?=

.PHONY: setup test demo lint clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest

# The demo: from nothing, a procedural world (or MAP=<real map>), its tile index, a simulated
# flight of 120 frames with unknown yaw and tilt, every frame localized; metrics table and plot.
DEMO := demo_out
demo: setup
	@if [ -z "$(MAP)" ]; then \
	  .venv/bin/gleam world --seed 7 --out $(DEMO)/world && \
	  .venv/bin/gleam index build --map $(DEMO)/world/satellite.tif --out $(DEMO)/index && \
	  .venv/bin/gleam simulate --map $(DEMO)/world/satellite_autumn.tif --out $(DEMO)/flight --frames 120 && \
	  .venv/bin/gleam eval --index $(DEMO)/index --flight $(DEMO)/flight --out $(DEMO)/eval --map $(DEMO)/world/satellite.tif; \
	else \
	  .venv/bin/gleam index build --map "$(MAP)" --out $(DEMO)/index && \
	  .venv/bin/gleam simulate --map "$(MAP)" --out $(DEMO)/flight --frames 120 && \
	  .venv/bin/gleam eval --index $(DEMO)/index --flight $(DEMO)/flight --out $(DEMO)/eval --map "$(MAP)"; \
	fi
	@echo "plot: $(DEMO)/eval/flight.png"

lint: setup
	$(PY) -m ruff check gleam_ros training test tools

clean:
	rm -rf build .venv demo_out
