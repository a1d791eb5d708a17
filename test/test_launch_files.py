"""Every launch file and parameter file matches the package: executables, parameters, args, paths.

ROS 2's `launch` is not installable here, so the XML is checked statically against what the node
really declares (:func:`gleam_ros.nodes.localizer_node.parameter_declarations`, the table the node
declares its parameters from) and against the source and colcon install trees.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from gleam_ros.nodes import explainer_node, localizer_node

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "build" / "colcon" / "install" / "gleam_ros"
LAUNCH_FILES = sorted(p for p in (ROOT / "launch").iterdir() if p.is_file()) if (ROOT / "launch").is_dir() else []
CONFIG_FILES = sorted((ROOT / "config").glob("*.yaml"))
# package -> (node name -> parameter declarations); one entry per node executable of this package
NODES = {
    "localizer_node": (localizer_node.NODE_NAME, localizer_node.parameter_declarations(),
                       localizer_node.validate_parameter, set(localizer_node.INPUT_TOPICS)),
    "explainer_node": (explainer_node.NODE_NAME, explainer_node.parameter_declarations(),
                       explainer_node.validate_parameter, set(explainer_node.INPUT_TOPICS)),
}
IMPLICIT_PARAMETERS = {"use_sim_time"}  # declared by every rclpy node
SUBST = re.compile(r"\$\((\S+)\s*([^)]*)\)")


def _args(root: ET.Element) -> dict[str, str | None]:
    return {a.get("name"): a.get("default") for a in root.iter("arg")}


def _resolve(text: str, args: dict[str, str | None], share: Path) -> str:
    """Evaluate $(var X) (with arg defaults) and $(find-pkg-share gleam_ros) in ``text``."""
    def sub(m: re.Match) -> str:
        kind, rest = m.group(1), m.group(2).strip()
        if kind == "var":
            default = args.get(rest)
            assert default is not None, f"$(var {rest}) has no default to check with"
            return _resolve(default, args, share)
        if kind == "find-pkg-share":
            assert rest == "gleam_ros", f"$(find-pkg-share {rest}): only this package is checked"
            return str(share)
        raise AssertionError(f"substitution $({kind} ...) not understood by this test: {m.group(0)}")

    return SUBST.sub(sub, text)


def _check_param_file(path: Path, node_name: str, decls: dict, validate) -> None:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path}: empty or not a mapping"
    for key, section in data.items():
        assert key.lstrip("/") in (node_name, "**"), f"{path}: section {key!r} is not for node {node_name!r}"
        params = section.get("ros__parameters")
        assert isinstance(params, dict), f"{path}: {key}: no ros__parameters mapping"
        for name, value in params.items():
            if name in IMPLICIT_PARAMETERS:
                continue
            assert name in decls, f"{path}: {name!r} is not a parameter {node_name} declares"
            default, desc = decls[name]
            # ROS 2 does not convert types: 2 for a double parameter fails at start-up
            assert type(value) is type(default), \
                f"{path}: {name}: {value!r} is {type(value).__name__}, the node declares {type(default).__name__}"
            for r in list(desc.floating_point_range) + list(desc.integer_range):
                assert r.from_value <= value <= r.to_value, f"{path}: {name}={value!r} outside [{r.from_value}, {r.to_value}]"
            assert not validate(name, value), f"{path}: {validate(name, value)}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_files_name_only_declared_parameters(path):
    name, decls, validate, _ = NODES["localizer_node"]
    _check_param_file(path, name, decls, validate)


def test_every_declared_parameter_has_a_description_and_ranges_where_numeric():
    for _, (_, decls, _, _) in NODES.items():
        for name, (default, desc) in decls.items():
            assert desc.description, name
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                ranged = desc.floating_point_range or desc.integer_range
                assert ranged or (isinstance(default, float) and math.isnan(default)), f"{name} has no range"


def test_there_are_launch_files():
    assert any(p.name.endswith(".launch.xml") for p in LAUNCH_FILES)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_matches_the_package(path):
    assert path.name.endswith(".launch.xml"), f"{path.name}: only XML launch files are validated here"
    root = ET.parse(path).getroot()
    assert root.tag == "launch"
    args = _args(root)
    text = path.read_text()
    # every $(var X) names a declared arg, and every declared arg is used
    used = set(re.findall(r"\$\(var\s+([\w]+)\)", text))
    assert used <= set(args), f"undeclared args used: {used - set(args)}"
    assert set(args) <= used, f"declared but unused args: {set(args) - used}"
    for a in root.iter("arg"):
        assert a.get("description"), f"arg {a.get('name')} has no description"
    # every $(find-pkg-share gleam_ros)/X exists in the source tree (CMake installs it to share/gleam_ros/X)
    shared = [v for e in root.iter() for v in e.attrib.values() if "$(find-pkg-share" in v]
    for value in shared:
        resolved = Path(_resolve(value, args, ROOT))
        assert resolved.exists(), f"{value} -> {resolved} does not exist"
        assert resolved.parts[len(ROOT.parts)] in ("launch", "config", "models"), f"{value}: not an installed folder"
    nodes = [n for n in root.iter("node") if n.get("pkg") == "gleam_ros"]
    assert nodes, "no gleam_ros node started"
    for node in nodes:
        exe = node.get("exec")
        assert exe in NODES, f"exec={exe!r}: not a node executable of gleam_ros ({sorted(NODES)})"
        script = ROOT / "scripts" / exe
        assert script.is_file() and os.access(script, os.X_OK), f"scripts/{exe} missing or not executable"
        node_name, decls, validate, topics = NODES[exe]
        assert node.get("name", node_name) == node_name, "the parameter files are keyed on the node name"
        for p in node.iter("param"):
            if p.get("from"):
                _check_param_file(Path(_resolve(p.get("from"), args, ROOT)), node_name, decls, validate)
            else:
                assert p.get("name") in decls or p.get("name") in IMPLICIT_PARAMETERS, p.get("name")
        for r in node.iter("remap"):
            assert r.get("from") in topics, f"remap from={r.get('from')!r}: the node has no such input"


@pytest.mark.parametrize("exe", sorted(NODES))
def test_node_executables_are_installed(exe):
    """The colcon install tree (`make setup`) has lib/gleam_ros/<exe>, where `ros2 run` and launch look."""
    installed = INSTALL / "lib" / "gleam_ros" / exe
    assert installed.is_file() and os.access(installed, os.X_OK), f"{installed} missing: re-run `make setup`"
    assert installed.read_bytes() == (ROOT / "scripts" / exe).read_bytes(), f"{installed} is stale: re-run `make setup`"
