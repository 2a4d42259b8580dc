"""Names, versions, file names and form headers as a hostile client sends them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from pypireg.domain.errors import BadUpload
from pypireg.domain.filenames import parse_filename
from pypireg.domain.metadata import CoreMetadata
from pypireg.domain.names import check_name, is_valid_name, normalize_name, parse_version
from pypireg.domain.upload_rules import check_form, check_metadata
from pypireg.domain.wheel_tags import known_platform
from pypireg.http.multipart import FormReader, content_disposition
from tests.distributions import metadata_text, wheel_bytes, wheel_filename
from tests.support.http import project_with_tokens, upload

KELVIN = "\u212a"  # matched "k" under re.IGNORECASE, and .lower() makes it one


# --- names and versions are ASCII, checked before any folding ---

@pytest.mark.parametrize("name", [
    f"{KELVIN}elvin", f"dem{KELVIN}", "caf\u00e9", "\u0130nfo", "\ufb01le", "demo\u0301",
    "\uff44\uff45\uff4d\uff4f", "demo\u200b",
])
def test_non_ascii_names_are_refused(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadUpload, match="ASCII"):
        check_name(name)


@given(st.text(min_size=1, max_size=30))
def test_a_valid_name_is_ascii_and_normalises_to_itself_lowercased(name: str) -> None:
    if is_valid_name(name):
        assert name.isascii()
        assert normalize_name(name) == normalize_name(normalize_name(name))
        assert normalize_name(name).isascii()


@pytest.mark.parametrize("version", ["\u0661.0", "1.\u0660", "\uff11.0"])
def test_non_ascii_versions_are_refused(version: str) -> None:
    with pytest.raises(BadUpload, match="ASCII"):
        parse_version(version)


def test_metadata_with_a_non_ascii_name_is_refused() -> None:
    form = {"name": ["kelvin"], "version": ["1.0"]}
    claim = check_form(form, wheel_filename("kelvin", "1.0"))
    meta = CoreMetadata("2.1", f"{KELVIN}elvin", "1.0", None, None, b"")
    with pytest.raises(BadUpload, match="invalid Name"):
        check_metadata(claim, meta)
    meta = CoreMetadata("2.1", "kelvin", "\u0661.0", None, None, b"")
    with pytest.raises(BadUpload, match="invalid Version"):
        check_metadata(claim, meta)


# --- wheel tags: what no installer can match is refused ---

@pytest.mark.parametrize("tags", [
    "py3-none-lolcat", "zz-yy-xx", "py3-none-manylinux_2_17_lolcat", "py3-none-macosx_9_0_x86_64",
    "py3-none-musllinux_1_2_ppc64", "py3-none-win_lolcat", "py3-none-linux_lolcat",
    "py3-none-ios_13_0_arm64_watchos", "py3-none-android_21_mips", "py3-none-any.lolcat",
    "py3-Abi!-any", "py3-none-manylinux1_aarch64",
])
def test_unknown_wheel_tags_are_refused(tags: str) -> None:
    with pytest.raises(BadUpload, match=r"unknown .* tag"):
        parse_filename(f"demo-1.0-{tags}.whl")


@pytest.mark.parametrize("tags", [
    "py3-none-any", "py2.py3-none-any", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp312-abi3-musllinux_1_2_aarch64", "cp39-cp39-win_amd64", "cp310-cp310-win32",
    "cp311-cp311-macosx_10_9_universal2", "cp313-cp313-macosx_15_0_arm64",
    "cp313-cp313-ios_13_0_arm64_iphoneos", "cp313-cp313-android_21_arm64_v8a",
    "cp311-cp311-linux_x86_64", "pp310-pypy310_pp73-manylinux_2_28_riscv64",
    "cp38-cp38m-manylinux1_i686", "graalpy311-graalpy242_311_native-manylinux_2_28_x86_64",
])
def test_real_wheel_tags_pass(tags: str) -> None:
    assert parse_filename(f"demo-1.0-{tags}.whl").name == "demo"


def test_platform_rules() -> None:
    assert known_platform("macosx_26_0_arm64") and not known_platform("macosx_9_9_x86_64")
    assert known_platform("manylinux_2_17_ppc64") and not known_platform("musllinux_1_1_ppc64")


# --- file names from the form are refused, never rewritten ---

def _form(disposition: str, extra_headers: str = "") -> bytes:
    return (f'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\ndemo\r\n'
            f"--b\r\nContent-Disposition: {disposition}\r\n{extra_headers}"
            f"Content-Type: application/octet-stream\r\n\r\nDATA\r\n--b--\r\n").encode()


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def read_form(body: bytes) -> FormReader:
    reader = FormReader("b", max_file_size=1000, open_file=lambda name: Sink())
    reader.feed(body)
    reader.close()
    return reader


@pytest.mark.parametrize("filename", [
    "C:\\\\Users\\\\me\\\\demo-1.0.tar.gz", "..\\\\demo-1.0.tar.gz", "../../demo-1.0.tar.gz",
    "dist/demo-1.0.tar.gz", "/tmp/demo-1.0.tar.gz", "demo-1.0.tar.gz/",
])
def test_file_names_with_a_folder_are_refused(filename: str) -> None:
    with pytest.raises(BadUpload, match="without any folder"):
        read_form(_form(f'form-data; name="content"; filename="{filename}"'))


@pytest.mark.parametrize("disposition", [
    'form-data; name="content"; filename="../../x"; filename="demo-1.0.tar.gz"',
    'form-data; name="content"; filename="demo-1.0.tar.gz"; FileName="other.tar.gz"',
    'form-data; name="content"; name="version"; filename="demo-1.0.tar.gz"',
    'form-data; name="a"; Name="content"; filename="demo-1.0.tar.gz"',
])
def test_repeated_disposition_parameters_are_refused(disposition: str) -> None:
    with pytest.raises(BadUpload, match="repeated"):
        read_form(_form(disposition))


def test_two_disposition_headers_are_refused() -> None:
    body = _form('form-data; name="content"; filename="demo-1.0.tar.gz"',
                 extra_headers='Content-Disposition: form-data; name="x"\r\n')
    with pytest.raises(BadUpload, match="exactly one"):
        read_form(body)


@pytest.mark.parametrize("value", ['form-data; name="unterminated', "form-data; name",
                                   "form-data name=x", 'form-data; =x', "; name=x"])
def test_malformed_dispositions_are_refused(value: str) -> None:
    with pytest.raises(BadUpload, match="Content-Disposition"):
        content_disposition(value)


def test_dispositions_as_clients_send_them() -> None:
    assert content_disposition('form-data; name="content"; filename="a-1.0.tar.gz"') == (
        "form-data", {"name": "content", "filename": "a-1.0.tar.gz"})
    assert content_disposition("form-data;name=x;") == ("form-data", {"name": "x"})
    assert content_disposition('form-data; name="a\\"b"')[1] == {"name": 'a"b'}
    assert content_disposition("form-data; name=content; filename*=UTF-8''d%C3%A9mo.tar.gz"
                               )[1]["filename"] == "démo.tar.gz"
    reader = read_form(_form('form-data; name="content"; filename="demo-1.0.tar.gz"'))
    assert reader.filename == "demo-1.0.tar.gz" and reader.fields == {"name": ["demo"]}


# --- through the upload API: refused with 400, nothing stored ---

@pytest_twisted.ensureDeferred
async def test_hostile_names_are_refused_over_http_and_nothing_is_stored(registry: Any) -> None:
    project, token, _ = await project_with_tokens(registry)
    kelvin_wheel = wheel_bytes("kelvin", "1.0", metadata=metadata_text(f"{KELVIN}elvin", "1.0"))
    cases = [
        (f"{KELVIN}elvin", "1.0", wheel_filename("kelvin", "1.0"), wheel_bytes("kelvin", "1.0")),
        ("kelvin", "1.0", wheel_filename("kelvin", "1.0"), kelvin_wheel),
        ("demo", "1.0", "demo-1.0-py3-none-lolcat.whl", wheel_bytes("demo", "1.0")),
        ("demo", "1.0", "C:\\\\dist\\\\demo-1.0-py3-none-any.whl", wheel_bytes("demo", "1.0")),
    ]
    for name, version, filename, content in cases:
        code, text, _ = await upload(registry, project.id, token, filename, content, name=name,
                                     version=version)
        assert code == 400, (filename, text)
        assert hashlib.sha256(content).hexdigest() not in str(registry.stored_files())
    assert registry.stored_files() == []
    assert await registry.settled_temp_files() == []
    assert Path(registry.storage).is_dir()
