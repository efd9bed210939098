"""The wheel built from the checkout is a working normfold: complete, licensed, and runnable outside the repository.

The wheel is built from a copy of the checkout (no build/ or egg-info left in
it) with the setuptools already installed (``--no-build-isolation``: no
network), installed with ``pip install --no-deps --target``, and run from a
folder outside the repository with only that target on PYTHONPATH ahead of the
environment's site-packages (which provides torch and the other dependencies).
"""
from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import normfold

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", "normfold-out",
                                  "tests", "data", "docs", "scripts", ".pytest_cache", ".hypothesis")


def _packages_in_tree() -> set[str]:
    """Every importable package of the checkout: folders of normfold/ with an __init__.py, and the zoo."""
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "normfold").rglob("__init__.py")}
    return found | ({"normfold.zoo"} if (ROOT / "models" / "__init__.py").is_file() else set())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=LEFT_OUT)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True)
    [built] = (tmp / "dist").glob("normfold-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("target")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, text=True)
    return target


def _run(args: list[str], target: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_pyproject_lists_every_package_of_the_tree():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert listed == _packages_in_tree()


def test_the_wheel_holds_every_package_the_license_and_the_version(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packaged == _packages_in_tree()
    assert {"_normfold_cli.py", "normfold/__main__.py"} <= set(names)
    assert "normfold/zoo/resnet.py" in names   # the bundled default model's code
    info = wheel.name.split("-")[1]
    dist_info = f"normfold-{info}.dist-info"
    license_text = zipfile.ZipFile(wheel).read(f"{dist_info}/licenses/LICENSE").decode()
    assert license_text == (ROOT / "LICENSE").read_text() and "Apache License" in license_text
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA"))
    assert meta["Version"] == normfold.__version__ == info
    assert meta["License-Expression"] == "Apache-2.0"
    entry = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "normfold = _normfold_cli:main" in entry


def test_the_installed_wheel_runs_outside_the_repository(installed, tmp_path):
    """One process (torch imports once): where normfold comes from, then the console entry's
    ``--version`` and ``run`` on the bundled default model."""
    script = ("import json, sys, normfold, normfold.zoo, _normfold_cli\n"
              "print(json.dumps([normfold.__file__, normfold.zoo.__file__, _normfold_cli.__file__]), flush=True)\n"
              "assert _normfold_cli.main(['--version']) == 0\n"
              "sys.exit(_normfold_cli.main(['run', '--input-shape', '1,3,64,64', '--out', 'out', '--json', 'r.json']))\n")
    done = _run(["-c", script], installed, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    where, version, *table = done.stdout.splitlines()
    assert all(Path(f).is_relative_to(installed) for f in json.loads(where))
    assert version == f"normfold {normfold.__version__}"
    assert table[-1] == "PASS"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == "resnet18-iternorm" and report["verify"]["ok"] is True
    assert len(report["fold"]["folded"]) > 0
    assert {Path(p).name for p in report["files"].values()} == {"model.onnx", "model.unfolded.onnx"}
    assert all((tmp_path / p).is_file() for p in report["files"].values())
