"""The ``gleam_explainer`` node: serves ``gleam_ros/srv/Explain`` (GLEAM-X) in a process of its own.

Thin adapter over :mod:`gleam_ros.core.explain`: converts the request's images (and the tile of
the loaded index a ``tile_id`` names) to core types, calls the explainer, converts the
:class:`~gleam_ros.core.explain.Explanation` back. A slow backend (an MLLM) only delays this
node's answers; the localizer calls it asynchronously with a timeout.

Parameters: ``index_path`` (tile index for ``tile_id`` requests; empty = reference images only),
``explainer`` (evidence | mllm), ``model_dir`` (local MLLM directory), ``device``, ``verdict_model``
(JSON of a calibrated verdict model; empty = the shipped one), ``hfov_deg`` (query camera field of
view used to turn the fitted scale into a height; 0 = unknown).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from gleam_ros import ros_env

ros_env.prepare()

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from gleam_ros.core.errors import GleamError  # noqa: E402
from gleam_ros.msg import EvidenceItem, Explanation  # noqa: E402
from gleam_ros.nodes import convert  # noqa: E402
from gleam_ros.srv import Explain  # noqa: E402

NODE_NAME = "gleam_explainer"
EXPLAINERS = ("evidence", "mllm")

# name -> (default, description, float range or None)
PARAMETERS: dict[str, tuple[Any, str, tuple[float, float] | None]] = {
    "index_path": ("", "tile index directory for requests by tile_id; empty = reference images only", None),
    "explainer": ("evidence", "explainer backend: evidence (measures, CPU) or mllm (local Qwen2.5-VL directory)", None),
    "model_dir": ("", "local directory of the MLLM (explainer mllm); never downloaded", None),
    "device": ("cpu", "device of the MLLM: cpu, cuda or cuda:N", None),
    "verdict_model": ("", "JSON of a calibrated verdict model for the evidence backend; empty = shipped model", None),
    "hfov_deg": (0.0, "query camera horizontal field of view, deg (0 = unknown)", (0.0, 170.0)),
}


INPUT_TOPICS: tuple[str, ...] = ()  # the node subscribes to nothing: it serves ~/explain


def parameter_declarations() -> dict[str, tuple[Any, ParameterDescriptor]]:
    """name -> (default, descriptor) of every parameter the node declares (no rclpy.init needed)."""
    out = {}
    for name, (default, desc, rng) in PARAMETERS.items():
        d = ParameterDescriptor(name=name, description=desc)
        if rng is not None:
            d.floating_point_range = [FloatingPointRange(from_value=rng[0], to_value=rng[1], step=0.0)]
        out[name] = (default, d)
    return out


def declared_parameter_names() -> list[str]:
    """Names of the parameters the explainer node declares."""
    return list(PARAMETERS)


def validate_parameter(name: str, value: Any) -> str:
    """Why ``value`` is invalid for parameter ``name`` beyond its descriptor range, or ''."""
    if name == "explainer" and value not in EXPLAINERS:
        return f"explainer must be one of {', '.join(EXPLAINERS)}, got {value!r}"
    return ""


def explanation_to_msg(exp: Any, header: Header, query_stamp: Any) -> Explanation:
    """Core :class:`~gleam_ros.core.explain.Explanation` → ``gleam_ros/msg/Explanation``."""
    msg = Explanation()
    msg.header = header
    msg.verdict = Explanation.VERDICT_MATCH if int(exp.verdict) == 1 else Explanation.VERDICT_NO_MATCH
    msg.confidence = float(exp.confidence) if math.isfinite(float(exp.confidence)) else 0.0
    msg.language = str(exp.language)
    msg.text = str(exp.text)
    msg.tile_id = str(exp.tile_id)
    msg.query_stamp = query_stamp
    msg.backend = str(exp.backend)
    for item in exp.evidence:
        msg.evidence.append(EvidenceItem(
            kind=str(item.kind), value=float(item.value) if math.isfinite(float(item.value)) else 0.0,
            unit=str(item.unit), supports_match=bool(item.supports_match), description=str(item.description),
            query_regions=[float(v) for box in item.query_regions for v in box],
            reference_regions=[float(v) for box in item.reference_regions for v in box],
        ))
    return msg


class ExplainerNode(Node):
    """Serves ``~/explain`` (gleam_ros/srv/Explain)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for name, (default, desc) in parameter_declarations().items():
            self.declare_parameter(name, default, desc)
        self.index = None
        self.explainer = None
        self.error = ""
        self._load()
        self.srv = self.create_service(Explain, "~/explain", self._on_explain)
        self.served = 0

    def _p(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _load(self) -> None:
        """Load the explainer and (optionally) the tile index; one clear log line on failure."""
        kind = str(self._p("explainer"))
        try:
            from gleam_ros.core.explain import make_explainer

            if kind not in EXPLAINERS:
                raise GleamError(f"parameter explainer must be one of {EXPLAINERS}, got {kind!r}")
            if kind == "mllm":
                if not self._p("model_dir"):
                    raise GleamError("parameter model_dir is empty: the mllm explainer loads only from a local directory")
                self.explainer = make_explainer("mllm", model_dir=str(self._p("model_dir")), device=str(self._p("device")))
            else:
                self.explainer = make_explainer("evidence", model=str(self._p("verdict_model")) or None)
        except Exception as exc:  # noqa: BLE001 - the node keeps running and answers with the reason
            self.error = f"explainer {kind!r}: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.error)
            return
        path = str(self._p("index_path"))
        if path:
            try:
                from gleam_ros.core.index import TileIndex

                self.index = TileIndex.load(path)
            except Exception as exc:  # noqa: BLE001
                self.error = f"parameter index_path={path!r}: {type(exc).__name__}: {exc}"
                self.get_logger().error(self.error)
                return
        self.get_logger().info(f"ready: explainer {kind}, index {path or '(none)'}")

    def _on_explain(self, req: Explain.Request, resp: Explain.Response) -> Explain.Response:
        t0 = time.perf_counter()
        try:
            resp = self._explain(req, resp)
        except GleamError as exc:
            resp.success, resp.message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bad request never kills the node
            resp.success, resp.message = False, f"internal error: {type(exc).__name__}: {exc}"
            self.get_logger().error(resp.message)
        if not resp.success:
            self.get_logger().warning(f"explain request refused: {resp.message}", throttle_duration_sec=5.0)
        else:
            self.served += 1
            self.get_logger().info(f"explained tile {resp.explanation.tile_id or '(image)'} in "
                                   f"{(time.perf_counter() - t0) * 1e3:.0f} ms: verdict {resp.explanation.verdict}")
        return resp

    def _explain(self, req: Explain.Request, resp: Explain.Response) -> Explain.Response:
        from gleam_ros.core.explain import ExplainContext

        if self.explainer is None:
            raise GleamError(f"explainer not loaded: {self.error}")
        if req.language not in ("en", "zh", ""):
            raise GleamError(f"language must be 'en' or 'zh', got {req.language!r}")
        language = req.language or "en"
        query = convert.image_msg_to_rgb(req.query)
        tile = None
        if req.tile_id:
            if self.index is None:
                raise GleamError(f"tile_id {req.tile_id!r} given but no index is loaded (parameter index_path)")
            try:
                tile = self.index.tile_by_id(req.tile_id)
            except (KeyError, GleamError):
                raise GleamError(f"tile_id {req.tile_id!r} is not in the index {self._p('index_path')}") from None
            reference = tile.image
        else:
            reference = convert.image_msg_to_rgb(req.reference)
        intr = None
        hfov = float(self._p("hfov_deg"))
        if hfov >= 1.0:
            from gleam_ros.core.camera import CameraIntrinsics

            intr = CameraIntrinsics.from_fov(query.shape[1], query.shape[0], hfov)
        similarity = None
        if req.has_hypothesis and math.isfinite(req.hypothesis.similarity) and req.hypothesis.similarity != 0.0:
            similarity = float(req.hypothesis.similarity)
        modality = "uav"  # without a hypothesis the request does not say
        if req.has_hypothesis:
            modality = convert.MODALITY_NAMES.get(int(req.hypothesis.modality), "")
            if not modality:
                raise GleamError(f"hypothesis.modality {req.hypothesis.modality} is not a GeoPoseHypothesis.MODALITY_*")
        ctx = ExplainContext(similarity=similarity, intrinsics=intr, tile=tile, tile_id=req.tile_id,
                             query_stamp=convert.stamp_to_sec(req.query.header.stamp), modality=modality)
        exp = self.explainer.explain(query, reference, ctx, language)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=req.query.header.frame_id)
        resp.explanation = explanation_to_msg(exp, header, req.query.header.stamp)
        if exp.evidence_image is not None:
            resp.evidence_image = convert.rgb_to_image_msg(exp.evidence_image, header)
        resp.success, resp.message = True, ""
        return resp


def main(args: list[str] | None = None) -> int:
    """Run the explainer node until SIGINT/SIGTERM (exit 0); 2 when a parameter given at start is invalid."""
    from gleam_ros.nodes._run import run_node

    return run_node(ExplainerNode, NODE_NAME, args=args)


if __name__ == "__main__":
    sys.exit(main())
