"""Building real (small) distributions for tests, in memory or on disk."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path


def metadata_text(name: str, version: str, *, requires_python: str | None = None,
                  summary: str = "A test package", metadata_version: str = "2.1") -> str:
    lines = [f"Metadata-Version: {metadata_version}", f"Name: {name}", f"Version: {version}",
             f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    return "\n".join(lines) + "\n\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def wheel_bytes(name: str, version: str, *, metadata: str | None = None,
                requires_python: str | None = None, payload: bytes = b"VALUE = 1\n",
                module: str | None = None) -> bytes:
    """A valid pure-Python wheel whose METADATA says *name* and *version*."""
    dist = name.replace("-", "_").replace(".", "_")
    module = module or dist.lower()
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": payload,
        f"{info}/METADATA": (metadata or metadata_text(name, version,
                                                       requires_python=requires_python)).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: pypireg-tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            # A fixed time: the same arguments give the same bytes (and
            # sha256) whenever they are made, even a second apart.
            entry = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            zf.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def wheel_filename(name: str, version: str) -> str:
    return f"{name.replace('-', '_').replace('.', '_')}-{version}-py3-none-any.whl"


def sdist_bytes(name: str, version: str, *, metadata: str | None = None,
                requires_python: str | None = None) -> bytes:
    """A .tar.gz sdist with PKG-INFO, pyproject.toml and one module."""
    dist = name.replace("-", "_").replace(".", "_")
    top = f"{dist}-{version}"
    pkg_info = (metadata or metadata_text(name, version, requires_python=requires_python,
                                          metadata_version="2.2")).encode()
    pyproject = (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n'
    ).encode()
    members = {f"{top}/PKG-INFO": pkg_info, f"{top}/pyproject.toml": pyproject,
               f"{top}/{dist.lower()}/__init__.py": b"VALUE = 1\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for path, data in members.items():
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mtime = 1_700_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sdist_filename(name: str, version: str) -> str:
    return f"{name.replace('-', '_').replace('.', '_')}-{version}.tar.gz"


def write(folder: Path, filename: str, data: bytes) -> Path:
    path = folder / filename
    path.write_bytes(data)
    return path


def upload_form(name: str, version: str, filename: str, content: bytes, *,
                boundary: str = "pypiregboundary", extra: dict[str, str] | None = None,
                sha256: str | None = None) -> tuple[bytes, bytes]:
    """A legacy-API upload body as twine sends it; returns (content type, body)."""
    fields: dict[str, str] = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel" if filename.endswith(".whl") else "sdist",
        "pyversion": "py3" if filename.endswith(".whl") else "source",
        "metadata_version": "2.1",
        "sha256_digest": sha256 if sha256 is not None else hashlib.sha256(content).hexdigest(),
        # As twine < 6 sent them; the registry hashes only what it is sent.
        "md5_digest": hashlib.md5(content).hexdigest(),
        "blake2_256_digest": hashlib.blake2b(content, digest_size=32).hexdigest(),
    }
    fields.update(extra or {})
    parts = []
    for key, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            + value.encode() + b"\r\n"
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + content + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}".encode(), body


# The demo distribution the archive tests take apart and rebuild.
WHEEL = wheel_filename("demo-pkg", "1.0")  # demo_pkg-1.0-py3-none-any.whl
SDIST = sdist_filename("demo-pkg", "1.0")  # demo_pkg-1.0.tar.gz
ZIP_SDIST = "demo_pkg-1.0.zip"
META = metadata_text("demo-pkg", "1.0").encode()
INFO = "demo_pkg-1.0.dist-info"
TOP = "demo_pkg-1.0"
