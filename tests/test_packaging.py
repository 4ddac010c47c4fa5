"""What can be checked of the container and the wheel without a Docker engine."""

from __future__ import annotations

import json
import platform
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def matrix_pythons() -> set[tuple[int, int]]:
    """The CI matrix, as declared: the `Programming Language :: Python :: X.Y` classifiers."""
    found = (
        re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", c)
        for c in project()["classifiers"]
    )
    return {(int(m[1]), int(m[2])) for m in found if m}


def test_image_python_is_admitted_and_tested() -> None:
    """Each stage's python:X.Y meets requires-python and is in the tested matrix, as is the lower bound."""
    requires = SpecifierSet(project()["requires-python"])
    tested = matrix_pythons()
    assert tested, "pyproject declares the tested Pythons as classifiers"
    assert all(requires.contains(f"{major}.{minor}.0") for major, minor in tested)
    [lower] = [Version(s.version).release[:2] for s in requires if s.operator == ">="]
    assert lower in tested, f"requires-python's lower bound {lower} is not tested"
    build_args = dict(
        args.partition("=")[::2] for word, args in dockerfile() if word == "ARG" and "=" in args
    )
    images = [
        re.sub(r"\$\{(\w+)\}", lambda m: build_args.get(m[1], m[0]), args)
        for word, args in dockerfile()
        if word == "FROM"
    ]
    assert len(images) == 2, "multi-stage: build, then runtime"
    for image in images:
        found = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?: AS \w+)?", image)
        assert found, f"FROM {image}: expected python:X.Y-slim"
        version = (int(found[1]), int(found[2]))
        assert requires.contains(f"{version[0]}.{version[1]}.0") and version in tested, image


def test_readme_names_the_matrix_pythons() -> None:
    """README's "Python versions" line names every tested X.Y, and this interpreter is admitted."""
    [line] = [t for t in (ROOT / "README.md").read_text().splitlines() if "Python versions" in t]
    assert all(f"{major}.{minor}" in line for major, minor in matrix_pythons()), line
    assert SpecifierSet(project()["requires-python"]).contains(platform.python_version())


def test_copied_files_exist_and_user_is_not_root() -> None:
    """COPY sources exist in the repository; the runtime user is not root."""
    for word, args in dockerfile():
        if word == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), source
    users = [args for word, args in dockerfile() if word == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_entrypoint_and_healthcheck_commands_run() -> None:
    """`syncer run` (ENTRYPOINT + CMD) is a real command; the HEALTHCHECK snippet is valid Python."""
    pairs = dict(dockerfile())
    command = json.loads(pairs["ENTRYPOINT"]) + json.loads(pairs["CMD"])
    assert command == ["syncer", "run"]
    done = subprocess.run(
        [sys.executable, "-m", "syncer", *command[1:], "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "run" in done.stdout
    health = json.loads(pairs["HEALTHCHECK"].split("CMD", 1)[1])
    assert health[:2] == ["python", "-c"]
    compile(health[2], "healthcheck", "exec")
    assert "9108/healthz" in health[2] and pairs["EXPOSE"] == "9108"


def test_wheel_ships_the_migrations(tmp_path: Path) -> None:
    """The wheel the image installs carries migrations/ as syncer/migrations, and finds them."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    expected = sorted(f"syncer/migrations/{p.name}" for p in (ROOT / "migrations").glob("*.sql"))
    assert sorted(n for n in names if n.startswith("syncer/migrations/")) == expected
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from syncer.store.migrate import load_migrations; print(len(load_migrations()))",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
    )
    assert found.stdout.strip() == str(len(expected)), found.stderr
