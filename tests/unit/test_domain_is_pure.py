"""The domain imports nothing that does I/O (CONVENTIONS.md, habit 1)."""

import ast
from pathlib import Path

import yidi.domain

FORBIDDEN = {"asyncio", "asyncpg", "redis", "aiokafka", "faststream", "pydantic", "socket", "requests", "httpx", "os"}


def test_domain_package_imports_no_io_library():
    domain_dir = Path(yidi.domain.__file__).parent
    offenders = []
    for path in domain_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
