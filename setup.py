"""The optional compiled redactor: collector/redact.py built by Cython as edgeloop.collector._redact_fast.

Everything else is in pyproject.toml. The extension is the very text of collector/redact.py (plus the
hash of that text, so redact.py can tell a stale build from a fresh one) compiled to C, with
collector/redact.pxd giving its character scans C types; where there is no
C compiler, no Python headers, no Cython, or EDGELOOP_PURE_PYTHON=1, the install goes on without it and
``redact`` runs as plain Python with the same output.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "collector" / "redact.py"


def extensions() -> list:
    if os.environ.get("EDGELOOP_PURE_PYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        return []
    text = SOURCE.read_bytes()
    # Cython names the module after its file: a copy named _redact_fast.py, stamped with the hash of its source.
    copy = ROOT / "build" / "cython" / "edgeloop" / "collector" / "_redact_fast.py"
    copy.parent.mkdir(parents=True, exist_ok=True)
    stamped = text + f'\n_SOURCE_SHA256 = "{hashlib.sha256(text).hexdigest()}"\n'.encode()
    if not copy.exists() or copy.read_bytes() != stamped:
        copy.write_bytes(stamped)
    declarations = SOURCE.with_suffix(".pxd").read_bytes()  # the C types of its character scans
    if not copy.with_suffix(".pxd").exists() or copy.with_suffix(".pxd").read_bytes() != declarations:
        copy.with_suffix(".pxd").write_bytes(declarations)
    built = cythonize(
        [Extension("edgeloop.collector._redact_fast", [str(copy.relative_to(ROOT))])],
        quiet=True,
        include_path=["build/cython"],  # where Cython finds the module's .pxd by its full name
        compiler_directives={
            "language_level": 3,
            "binding": True,
            # Annotations stay hints, as in CPython: a str subclass or None meets the same code path.
            "annotation_typing": False,
        },
    )
    for extension in built:
        extension.optional = True  # a failed compile leaves the pure-Python redactor, never a failed install
    return built


setup(ext_modules=extensions())
