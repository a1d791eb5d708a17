# gleam_ros: `make demo` runs the main job on built-in data, `make test` the test suite.
# Both set up the environment first when it is missing or stale (tools/setup_env.sh).
PY := .venv/bin/python
MAP ?=
# This clone's sources first, for this process and every child (node processes, the gleam CLI):
# clones on one machine share the virtual environment, whose editable install names only one.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: setup test demo demo-uav demo-vehicle bench lint clean

setup:
	@bash tools/setup_env.sh

test: setup
	$(PY) -m pytest

# The demo: from nothing, a procedural world (or MAP=<real map>), its tile index, a simulated flight
# recorded as a rosbag2 (120 frames at 1 fps, unknown yaw, GPS lost from 40 s to 80 s), replayed in
# real time through the localizer node process over DDS; metrics (localization + GPS fallback), plot.
DEMO := demo_out
PLATFORM ?= uav
demo: demo-$(PLATFORM)

demo-uav: setup
	@if [ -z "$(MAP)" ]; then \
	  .venv/bin/gleam world --seed 7 --out $(DEMO)/world && \
	  .venv/bin/gleam index build --map $(DEMO)/world/satellite.tif --out $(DEMO)/index && \
	  .venv/bin/gleam bag simulate --map $(DEMO)/world/satellite_autumn.tif --out $(DEMO)/flight.mcap --overwrite \
	    --frames 120 --fps 1 --gps-dropout 40,80 && \
	  .venv/bin/gleam bag eval --bag $(DEMO)/flight.mcap --index $(DEMO)/index --out $(DEMO)/eval \
	    --map $(DEMO)/world/satellite.tif; \
	else \
	  .venv/bin/gleam index build --map "$(MAP)" --out $(DEMO)/index && \
	  .venv/bin/gleam bag simulate --map "$(MAP)" --out $(DEMO)/flight.mcap --overwrite \
	    --frames 120 --fps 1 --gps-dropout 40,80 && \
	  .venv/bin/gleam bag eval --bag $(DEMO)/flight.mcap --index $(DEMO)/index --out $(DEMO)/eval --map "$(MAP)"; \
	fi
	@echo "plot: $(DEMO)/eval/flight.png"

# PLATFORM=vehicle: a car instead. The world's roads driven for 120 s (1 fps street-level frames in autumn,
# the index is the summer satellite render; 20 Hz odometry; GPS lost from 40 s to 110 s), replayed in real
# time through the localizer node process over DDS with config/vehicle.yaml and the world's road layer.
# HARD=1: the hard benchmark's drive (body pitch / roll reported in /odom, mis-calibrated camera, sensor
# effects, occluders).
demo-vehicle: setup
	.venv/bin/gleam world --seed 7 --out $(DEMO)/world
	.venv/bin/gleam index build --map $(DEMO)/world/satellite.tif --out $(DEMO)/index
	.venv/bin/gleam bag simulate --platform vehicle --world $(DEMO)/world --out $(DEMO)/drive.mcap --overwrite \
	  --frames 121 --fps 1 --gps-dropout 40,110 $(if $(HARD),--hard,)
	.venv/bin/gleam bag eval --bag $(DEMO)/drive.mcap --index $(DEMO)/index --out $(DEMO)/eval_vehicle \
	  --map $(DEMO)/world/satellite.tif --param road_layer_path:=$(abspath $(DEMO)/world)
	@echo "plot: $(DEMO)/eval_vehicle/flight.png"

# Pipeline benchmark on a real map (default: the Turku sample next to the checkout): index,
# a 120-frame simulated flight, then the same flight localized with torch and with ONNX Runtime.
BENCH_MAP ?= ../shared/data/turku_satellite
BENCH := results/bench
bench: setup
	.venv/bin/gleam index build --map "$(BENCH_MAP)" --out $(BENCH)/index
	.venv/bin/gleam simulate --map "$(BENCH_MAP)" --out $(BENCH)/flight --frames 120 --seed 0
	.venv/bin/gleam eval --index $(BENCH)/index --flight $(BENCH)/flight --out $(BENCH)/torch --map "$(BENCH_MAP)" --compare-onnx
	.venv/bin/gleam eval --index $(BENCH)/index --flight $(BENCH)/flight --out $(BENCH)/onnx --map "$(BENCH_MAP)" --backend onnx

lint: setup
	$(PY) -m ruff check gleam_ros training test tools

clean:
	rm -rf build .venv demo_out
