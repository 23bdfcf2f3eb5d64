"""deploy/requirements.lock and deploy/requirements-runtime.lock against pyproject.toml and the
packages installed: a new machine (deploy/local/python.sh) and the image (deploy/Dockerfile)
install the versions the suite ran with, each file checked against the lock's sha256, not
whatever PyPI or a mirror serves that day (a fast-depends 4 under FastStream 0.7, say, or a
tampered file). The last tests run python.sh itself on a project of their own, offline."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK = ROOT / "deploy" / "requirements.lock"
RUNTIME_LOCK = ROOT / "deploy" / "requirements-runtime.lock"


def entries(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """A lock's entries: canonical name -> (version, its sha256 hashes)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"{path.name}: not a pin with its hashes: {line[:120]!r}"
        name = canonicalize_name(match[1])
        assert name not in found, f"{path.name}: {name} locked twice"
        found[name] = (match[2], frozenset(re.findall(r"[0-9a-f]{64}", match[3])))
    return found


def lock_module():
    """deploy/local/lock.py, which writes the locks (a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("yidi_lock_script", ROOT / "deploy" / "local" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def closure(requirements: list[str]) -> dict[str, str]:
    """Every distribution ``requirements`` need (as lock.py follows them: each installed
    distribution's own requirements, their markers read for this interpreter and the extras asked
    for), with its installed version."""
    return {name: metadata.version(name) for name in lock_module().closure(requirements)}


def build_backend() -> tuple[str, str]:
    [text] = PYPROJECT["build-system"]["requires"]
    requirement = Requirement(text)
    [spec] = requirement.specifier
    assert spec.operator == "==", f"{text}: the build backend is pinned exactly"
    return canonicalize_name(requirement.name), spec.version


def test_every_pinned_dependency_of_pyproject_is_locked_alike():
    wanted = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]
    lock = entries(LOCK)
    for text in wanted:
        requirement = Requirement(text)
        [spec] = requirement.specifier
        assert spec.operator == "==", f"{text}: pyproject pins its dependencies exactly"
        assert lock.get(canonicalize_name(requirement.name), ("",))[0] == spec.version, text


def test_everything_the_services_and_the_suite_install_is_locked_at_the_version_installed():
    # Run time and dev alike: a package left out would be missing on a new machine (the lock is
    # installed --no-deps). This suite runs in a .venv that python.sh built from the lock, so a
    # difference here is a lock not renewed after a dependency changed (its header says how).
    lock = entries(LOCK)
    needed = closure(PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"])
    assert "fast-depends" in needed and "typing-extensions" in needed, needed  # FastStream's, pydantic's
    missing = sorted(name for name in needed if name not in lock)
    assert not missing, f"not in deploy/requirements.lock: {missing}"
    differ = {name: (lock[name][0], version) for name, version in needed.items() if lock[name][0] != version}
    assert not differ, f"locked, installed: {differ}"


def test_the_build_backend_is_locked_at_pyprojects_pin_in_both_locks():
    # Both build the project with --no-build-isolation: the setuptools they build it with is the
    # lock's, hash-checked, and the one pyproject.toml names.
    name, version = build_backend()
    assert entries(LOCK)[name][0] == version
    assert entries(RUNTIME_LOCK)[name][0] == version
    assert metadata.version(name) == version, "the .venv's setuptools is not the locked one: make venv"


def test_the_runtime_lock_is_the_services_part_of_the_whole_lock_hashes_and_all():
    lock, runtime = entries(LOCK), entries(RUNTIME_LOCK)
    backend, _ = build_backend()
    assert set(runtime) == set(closure(PROJECT["dependencies"])) | {backend}, (
        "deploy/requirements-runtime.lock is not what the services need: make lock"
    )
    differ = sorted(name for name in runtime if runtime[name] != lock.get(name))
    assert not differ, f"locked otherwise in the two locks: {differ}"
    # The dev tools stay out of the image.
    assert "pytest" in lock and "pytest" not in runtime


def test_every_locked_version_has_a_wheel_hash_for_each_file_a_platform_might_take():
    # A lock written from the index holds every file of the version (wheels of other platforms, the
    # sdist): one with a single hash would refuse the image's build on another architecture where
    # the package has platform wheels. Those with compiled code ship many files.
    lock = entries(LOCK)
    for name in ("asyncpg", "orjson", "pydantic-core"):
        assert len(lock[name][1]) > 10, f"{name}: only {len(lock[name][1])} hashes"


# ---- python.sh itself, offline, on a project of its own ------------------------------------


def wheel(directory: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """A minimal pure-Python wheel, and its sha256."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in files.items():
            archive.writestr(member, content)
    return path


def repacked(directory: Path, name: str) -> Path:
    """The wheel of an installed pure-Python distribution of this venv, packed again from its
    RECORD (the build backend, offline)."""
    dist = metadata.distribution(name)
    path = directory / f"{name}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for file in dist.files or []:
            located = Path(dist.locate_file(file))
            if located.is_file() and "__pycache__" not in file.parts:
                archive.write(located, str(file))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout of its own: python.sh and common.sh, a project needing `tinydep`, a directory of
    wheels standing in for the index."""
    root = tmp_path / "checkout"
    (root / "deploy" / "local").mkdir(parents=True)
    for script in ("python.sh", "common.sh"):
        shutil.copy2(ROOT / "deploy" / "local" / script, root / "deploy" / "local" / script)
    backend, version = build_backend()
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["{backend}=={version}"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "lockdemo"\nversion = "0.1"\nrequires-python = ">=3.11,<3.12"\n'
        'dependencies = ["tinydep==1.0"]\n\n[tool.setuptools]\npackages = ["lockdemo"]\n'
    )
    (root / "lockdemo").mkdir()
    (root / "lockdemo" / "__init__.py").write_text("")
    (tmp_path / "wheels").mkdir()
    return root


def lock(project: Path, *entries: tuple[Path, str]) -> None:
    """The checkout's lock: each wheel with the hash given, and the build backend with its own."""
    backend = repacked(project.parent / "wheels", "setuptools")
    lines = [f"setuptools=={metadata.version('setuptools')} --hash=sha256:{sha256(backend)}"]
    for path, digest in entries:
        name, version = path.name.split("-")[:2]
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{digest}")
    (project / "deploy" / "requirements.lock").write_text("\n".join(lines) + "\n")


def run_python_sh(root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))
    }
    env |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(root.parent / "wheels"),
        # The interpreter running the suite is a Python 3.11 one; python.sh makes its venv from it.
        "PYTHON": str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"),
    }
    return subprocess.run(
        ["bash", str(root / "deploy" / "local" / "python.sh")], capture_output=True, text=True, env=env, timeout=300
    )


def test_python_sh_installs_the_locked_files_and_the_project(project: Path):
    tinydep = wheel(project.parent / "wheels", "tinydep", "1.0")
    lock(project, (tinydep, sha256(tinydep)))
    result = run_python_sh(project)
    assert result.returncode == 0, result.stderr
    venv_python = project / ".venv" / "bin" / "python"
    shown = subprocess.run(
        [venv_python, "-c", "import tinydep, lockdemo; print(tinydep.VERSION)"], capture_output=True, text=True
    )
    assert shown.stdout.strip() == "1.0", shown.stderr
    assert (project / ".venv" / ".installed-stamp").exists()


def test_python_sh_makes_a_venv_copied_from_another_checkout_again(project: Path):
    # Its editable install pointed at the other checkout, whose code the copy's suite then ran,
    # with nothing said (a review, session 49).
    tinydep = wheel(project.parent / "wheels", "tinydep", "1.0")
    lock(project, (tinydep, sha256(tinydep)))
    assert run_python_sh(project).returncode == 0
    copy = project.parent / "copy"
    shutil.copytree(project, copy, symlinks=True)
    assert run_python_sh(project).returncode == 0  # the original's own: the fast path, nothing said
    result = run_python_sh(copy)
    assert result.returncode == 0, result.stderr
    assert "made for another checkout" in result.stderr
    assert (copy / ".venv" / ".installed-stamp").read_text().strip() == str(copy.resolve())
    found = subprocess.run([copy / ".venv" / "bin" / "python", "-c", "import lockdemo; print(lockdemo.__file__)"],
                           capture_output=True, text=True, cwd=project.parent)
    assert found.stdout.strip().startswith(str(copy.resolve())), found


def test_python_sh_after_a_failed_install_runs_pip_again_in_the_same_venv(project: Path):
    # The venv names its checkout as it is made: a failed pip (no stamp) is tried again in it, not
    # the venv made anew (the diff review, session 49).
    tinydep = wheel(project.parent / "wheels", "tinydep", "1.0")
    lock(project, (tinydep, "0" * 64))
    assert run_python_sh(project).returncode != 0
    assert (project / ".venv" / ".checkout").read_text().strip() == str(project.resolve())
    lock(project, (tinydep, sha256(tinydep)))
    result = run_python_sh(project)
    assert result.returncode == 0, result.stderr
    assert "making .venv again" not in result.stderr and "created .venv" not in result.stderr, result.stderr


def test_python_sh_refuses_a_file_whose_hash_is_not_the_locked_one(project: Path):
    tinydep = wheel(project.parent / "wheels", "tinydep", "1.0")
    lock(project, (tinydep, "0" * 64))
    result = run_python_sh(project)
    assert result.returncode != 0
    assert "do not match the hashes" in result.stderr.lower(), result.stderr
    assert sha256(tinydep) in result.stderr  # pip names the file's own hash
    assert "pip install --require-hashes -r deploy/requirements.lock failed" in result.stderr
    assert not (project / ".venv" / ".installed-stamp").exists(), "a refused install must be tried again"


def test_python_sh_says_so_when_the_lock_lacks_a_dependency(project: Path):
    # Installed --no-deps, nothing resolves what the lock left out: pip check does, and python.sh
    # stops rather than leave a venv the services fail to import in.
    tinydep = wheel(project.parent / "wheels", "tinydep", "1.0", requires=["otherdep>=2"])
    lock(project, (tinydep, sha256(tinydep)))
    result = run_python_sh(project)
    assert result.returncode != 0
    assert "otherdep" in result.stderr, result.stderr
    assert "make lock" in result.stderr and "rm -rf .venv" in result.stderr
    assert not (project / ".venv" / ".installed-stamp").exists()


# ---- lock.py's reading of the index -------------------------------------------------------


def test_lock_reads_every_file_of_the_version_from_the_simple_index_and_no_other(monkeypatch):
    module = lock_module()
    h = [f"{i:064x}" for i in range(6)]
    page = f"""<!DOCTYPE html><html><body>
    <a href="https://files.example/p/orjson-3.13.0-cp311-cp311-manylinux_2_17_x86_64.whl#sha256={h[0]}">w1</a>
    <a href="../../p/orjson-3.13.0-cp311-cp311-macosx_15_0_arm64.whl#sha256={h[1]}" data-requires-python="&gt;=3.9">w2</a>
    <a href="https://files.example/p/orjson-3.13.0.tar.gz#sha256={h[2]}">sdist</a>
    <a href="https://files.example/p/orjson-3.13.0.post1.tar.gz#sha256={h[3]}">a later post release</a>
    <a href="https://files.example/p/orjson-3.12.9-cp311-cp311-manylinux_2_17_x86_64.whl#sha256={h[4]}">older</a>
    <a href="https://files.example/p/orjson-3.13.0-py3-none-any.whl#md5=abc">no sha256</a>
    </body></html>"""
    asked = []

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return page.encode()

    def urlopen(request, timeout):
        asked.append(request.full_url)
        return Response()

    monkeypatch.setattr(module.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(module, "INDEX", "https://mirror.example/simple/")
    assert module.index_hashes("OrJSON", "3.13.0") == sorted(h[:3])
    assert asked == ["https://mirror.example/simple/orjson/"]
    with pytest.raises(SystemExit, match="no file of orjson 3.14.0"):
        module.index_hashes("orjson", "3.14.0")


def test_lock_tries_a_page_three_times_then_stops_writing_nothing(monkeypatch, tmp_path):
    module = lock_module()
    calls = []

    def urlopen(request, timeout):
        calls.append(request.full_url)
        raise OSError("connection reset")

    monkeypatch.setattr(module.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    with pytest.raises(SystemExit, match="could not read .*nothing was written"):
        module.index_page("https://mirror.example/simple/orjson/")
    assert len(calls) == 3
