"""What can be checked of the container and the wheel without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

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


def test_image_python_satisfies_the_project() -> None:
    """Every stage's python:X.Y image meets requires-python, and the tests run on that X.Y."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = tuple(int(p) for p in re.findall(r"\d+", project["requires-python"])[:2])
    images = [args for word, args in dockerfile() if word == "FROM"]
    assert len(images) == 2, "multi-stage: build, then runtime"
    for image in images:
        version = tuple(int(p) for p in re.match(r"python:(\d+)\.(\d+)-slim", image).groups())  # type: ignore[union-attr]
        assert version >= minimum
        assert version == sys.version_info[:2], "CI tests the image's Python version"


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
