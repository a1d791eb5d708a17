"""The package is one consistent thing: package.xml, setup.py, CMakeLists.txt, requirements, install tree."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ET.parse(ROOT / "package.xml").getroot()

# pip distribution -> rosdep key used in package.xml
ROSDEP_KEYS = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "opencv-python-headless": "python3-opencv",
    "pyproj": "python3-pyproj",
    "pyyaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "psutil": "python3-psutil",
    "rasterio": "python3-rasterio",
    "pillow": "python3-pil",
    "torch": "python3-torch",
    "onnxruntime": "python3-onnxruntime-pip",
    "faiss-cpu": "python3-faiss-pip",
    "timm": "python3-timm-pip",
    "safetensors": "python3-safetensors-pip",
    "rosbags": "python3-rosbags-pip",
}


def _setup_py(*flags: str) -> list[str]:
    out = subprocess.run([sys.executable, "setup.py", *flags], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()


def _install_requires() -> list[str]:
    src = (ROOT / "setup.py").read_text()
    block = re.search(r"INSTALL_REQUIRES = \[(.*?)\]", src, re.S).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_name_and_version_match():
    name, version = _setup_py("--name", "--version")
    assert name == PKG.findtext("name") == "gleam_ros"
    assert version == PKG.findtext("version")
    import gleam_ros

    assert gleam_ros.__version__ == version


def test_python_dependencies_match_package_xml_both_ways():
    exec_keys = {e.text for e in PKG.findall("exec_depend") if e.text.startswith("python3-")}
    reqs = _install_requires()
    missing_in_xml = [r for r in reqs if ROSDEP_KEYS.get(r) not in exec_keys]
    assert not missing_in_xml, f"setup.py requirements without a package.xml exec_depend: {missing_in_xml}"
    from_reqs = {ROSDEP_KEYS[r] for r in reqs}
    missing_in_setup = sorted(exec_keys - from_reqs)
    assert not missing_in_setup, f"package.xml exec_depends without a setup.py requirement: {missing_in_setup}"


def test_every_requirement_is_pinned():
    pins = {}
    for line in (ROOT / "requirements" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([\w.+]+)", line)
            assert m, f"requirements.txt line not pinned with ==: {line!r}"
            pins[m.group(1).lower()] = m.group(3)
    for req in _install_requires():
        assert req.lower() in pins, f"{req} (setup.py) is not pinned in requirements/requirements.txt"


def test_cmake_generates_exactly_the_interface_files():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:msg|srv)/\w+\.(?:msg|srv))"', cmake))
    on_disk = {str(p.relative_to(ROOT)) for p in [*ROOT.glob("msg/*.msg"), *ROOT.glob("srv/*.srv")]}
    assert listed == on_disk
    assert not list(ROOT.glob("msg/*.srv")), "services belong in srv/"


def test_colcon_install_tree_has_generated_interfaces_and_data():
    from gleam_ros import ros_env

    prefix = ros_env.install_prefix()
    assert prefix is not None, "run `make setup`: no colcon install tree with generated interfaces"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "gleam_ros"
    for mod in ("msg/_geo_pose_hypothesis.py", "msg/_geo_pose_hypotheses.py", "msg/_explanation.py",
                "msg/_evidence_item.py", "srv/_explain.py"):
        assert (site / mod).is_file(), mod
    # the hand-written package was installed over rosidl's empty __init__.py
    assert "_find_generated_interfaces" in (site / "__init__.py").read_text()
    assert (prefix / "share" / "gleam_ros" / "package.xml").is_file()
    index = prefix / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" / "gleam_ros"
    listed = index.read_text().split()
    assert "srv/Explain.srv" in listed and "msg/GeoPoseHypothesis.msg" in listed
    for data_dir in ("config", "models", "launch"):
        if (ROOT / data_dir).is_dir() and any((ROOT / data_dir).iterdir()):
            assert (prefix / "share" / "gleam_ros" / data_dir).is_dir(), data_dir


def test_generated_interfaces_import_in_a_clean_process():
    """With nothing sourced, the venv's python finds rclpy and our interfaces (entry-point promise)."""
    code = (
        "from gleam_ros import ros_env; ros_env.prepare();"
        "import rclpy; from gleam_ros.msg import GeoPoseHypotheses; from gleam_ros.srv import Explain;"
        "print(GeoPoseHypotheses.__module__, Explain.Request.__name__)"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "gleam_ros.msg._geo_pose_hypotheses Explain_Request" in out.stdout


def test_gleam_cli_help_with_nothing_sourced():
    gleam = Path(sys.executable).parent / "gleam"
    out = subprocess.run([str(gleam), "--help"], env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: gleam" in out.stdout
