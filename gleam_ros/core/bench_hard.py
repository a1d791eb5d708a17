"""``gleam bench run --hard``: the benchmark's scenes with flights that fail the way real ones do.

Two scenes, built from :class:`gleam_ros.core.bench.BenchConfig` and a
:class:`gleam_ros.core.sim.realism.HardSpec`:

* the real map (``--map``): the index is built from an *other-source* reference
  (:meth:`HardSpec.reference_map`: misregistered by ``shift_e_m`` / ``shift_n_m``, re-coloured and
  re-textured), the flight is rendered from the original map with oblique views (up to
  ``max_off_nadir_deg``) and sensor effects. Every fix against that reference is off by the shift: the
  error the user sees;
* the procedural world: the index is the ``ref_season`` render, the flight sees the ``world_season``
  render *with heights* (parallax: roofs and crowns stand up, facades, occlusion), oblique, with sensor
  effects.

Verification accepts poses up to ``HARD_MAX_TILT_DEG`` off nadir (the default 25 deg would reject every
frame the oblique flight takes beyond it). With ``cfg.attitude_priors`` (the default) every frame comes with
the autopilot's attitude as a real UAV has it (:class:`gleam_ros.core.flight.AttitudeNoise`: pitch / roll
1 deg, heading 5 deg), and the localizer searches tiles around the oblique view's centre
(:mod:`gleam_ros.core.oblique`); without, only the barometric height.
"""

from __future__ import annotations

from dataclasses import asdict

from .sim.realism import HardSpec, HeightScene, simulate_hard_to_folder

#: VerifyConfig.max_tilt_deg of the hard scenes: the flight's 45 deg plus a 5 deg margin.
HARD_MAX_TILT_DEG = 50.0


def hard_scenes(cfg, hard: HardSpec | None = None) -> list:
    """The hard :class:`gleam_ros.core.bench.Scene` list for ``cfg`` (real map and/or procedural world)."""
    from .bench import Scene
    from .flight import AttitudeNoise
    from .maps import open_map

    hard = HardSpec() if hard is None else hard
    attitude = AttitudeNoise() if cfg.attitude_priors else None
    att_text = (f", attitude priors pitch/roll {attitude.pitch_roll_std_deg:g} deg, heading {attitude.heading_std_deg:g} "
                "deg (1 sigma)" if attitude else ", altitude prior only")
    verify = {"max_tilt_deg": max(HARD_MAX_TILT_DEG, hard.max_off_nadir_deg + 5.0)}
    scenes = []
    if cfg.map_path:
        geomap = open_map(cfg.map_path)
        ref = hard.reference_map(geomap, seed=cfg.seed)

        def sim_real(fmap, spec, out, progress=False):
            return simulate_hard_to_folder(fmap, spec, out, hard, progress=progress)

        scenes.append(Scene(
            f"{geomap.name}_hard", ref, geomap,
            f"real map {geomap.name}, hard flight: index from another source (shifted {hard.shift_e_m:g} m E, "
            f"{hard.shift_n_m:g} m N, colour/texture change {hard.ref_change:g}), oblique views up to "
            f"{hard.max_off_nadir_deg:g} deg, sensor effects {hard.sensor:g}, photometric change {cfg.photometric:g}"
            f", declared registration accuracy {cfg.ref_std_m:g} m{att_text}",
            simulate=sim_real, verify=verify, hard=asdict(hard), reference_std_m=cfg.ref_std_m, attitude=attitude))
    if cfg.world:
        from .sim.world import WorldConfig, make_world

        world = make_world(WorldConfig(seed=cfg.world_seed, size_m=cfg.world_size_m, gsd_m=cfg.world_gsd_m))
        index_map = world.satellite_map() if hard.ref_season == world.cfg.season else _season_map(world, hard.ref_season)
        scene = HeightScene.from_world(world, season=cfg.world_season, seed=cfg.world_seed + 1000)
        name = f"world{cfg.world_seed}_{cfg.world_size_m:g}m_hard"

        def sim_world(fmap, spec, out, progress=False):
            return simulate_hard_to_folder(fmap, spec, out, hard, scene=scene, progress=progress)

        scenes.append(Scene(
            name, index_map, scene.geomap(f"{name}_{cfg.world_season}"),
            f"procedural world seed {cfg.world_seed}, {cfg.world_size_m:g} m, hard flight: index from the "
            f"{hard.ref_season} render, flight over the {cfg.world_season} render with heights (parallax"
            f"{'' if hard.parallax else ' off'}), oblique views up to {hard.max_off_nadir_deg:g} deg, sensor effects "
            f"{hard.sensor:g}, photometric change {cfg.photometric:g}{att_text}",
            simulate=sim_world, verify=verify, hard=asdict(hard), attitude=attitude))
    return scenes


def _season_map(world, season: str):
    from .maps import map_from_array

    return map_from_array(world.variant(season=season), world.crs, world.transform,
                          name=f"world{world.cfg.seed}_{season}")


__all__ = ["HARD_MAX_TILT_DEG", "hard_scenes"]
