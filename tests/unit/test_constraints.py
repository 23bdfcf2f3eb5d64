"""deploy/constraints.txt against pyproject.toml and the packages installed: a new machine
(deploy/local/python.sh) and the image (deploy/Dockerfile) install the versions the suite ran
with, not whatever PyPI has that day (a fast-depends 4 under FastStream 0.7, say)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        assert match, f"not a pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{name} pinned twice"
        found[name] = match[2]
    return found


def closure(requirements: list[str]) -> dict[str, str]:
    """Every distribution ``requirements`` need, with its installed version, following each
    installed distribution's own requirements (their markers read for this interpreter and the
    extras asked for)."""
    seen: dict[str, str] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        version = metadata.version(name)
        extras = set(requirement.extras)
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen[key] = version
        for child in metadata.requires(name) or []:
            child_requirement = Requirement(child)
            if child_requirement.marker is None:
                todo.append((child_requirement, ""))
            else:
                # A requirement of one of the extras asked for, or of the interpreter (no extra).
                todo.extend((child_requirement, e) for e in (extras or {""}) | {""})
    return {key.split("[")[0]: version for key, version in seen.items()}


def test_every_pinned_dependency_of_pyproject_is_pinned_alike_in_the_constraints():
    wanted = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]
    constraints = pins()
    for text in wanted:
        requirement = Requirement(text)
        [spec] = requirement.specifier
        assert spec.operator == "==", f"{text}: pyproject pins its dependencies exactly"
        assert constraints.get(canonicalize_name(requirement.name)) == spec.version, text


def test_everything_the_services_and_the_suite_install_is_pinned_at_the_version_installed():
    # Run time and dev alike: a package left out would be resolved afresh on a new machine. This
    # suite runs in a .venv that python.sh built with the constraints, so a difference here is
    # a constraints file not renewed after a dependency changed (its header says how).
    constraints = pins()
    needed = closure(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    assert "fast-depends" in needed and "typing-extensions" in needed, needed  # FastStream's, pydantic's
    missing = sorted(name for name in needed if name not in constraints)
    assert not missing, f"not in deploy/constraints.txt: {missing}"
    differ = {name: (constraints[name], version) for name, version in needed.items() if constraints[name] != version}
    assert not differ, f"pinned, installed: {differ}"


def test_the_build_backend_is_pinned_too():
    """pip builds the project (``pip install -e .``, the image's ``pip install .``) in an isolated
    environment the constraints do not reach: its requirements are pinned in pyproject.toml itself."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert requires, "pyproject.toml names its build backend's requirements"
    for requirement in map(Requirement, requires):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} is not pinned"
