"""Which wheel platform tags the registry accepts.

Domain layer, no I/O. The public index refuses wheels whose platform tag
no installer can match (`py3-none-lolcat`), because a wheel nobody can
install is a mistake or an attack; so do we, with the same families:

- `any`, Windows (`win32`, `win_amd64`, `win_arm64`, `win_ia64`);
- manylinux: `manylinux1_*`, `manylinux2010_*`, `manylinux2014_*` and PEP
  600's `manylinux_X_Y_<arch>`; musllinux (PEP 656) `musllinux_X_Y_<arch>`;
- macOS `macosx_X_Y_<arch>` (10.x, and 11 on), iOS (PEP 730) and Android
  (PEP 738) tags;
- `linux_armv6l`/`linux_armv7l` (the public index keeps these for piwheels).

One deliberate difference: plain `linux_<arch>` wheels (built for one
distribution) are accepted for the known architectures. The public index
refuses them because strangers cannot know which distribution they need;
a team's private index is exactly where such wheels for its own machines
belong.
"""

from __future__ import annotations

import re

_STATIC = frozenset({
    "any", "win32", "win_amd64", "win_arm64", "win_ia64",
    "manylinux1_x86_64", "manylinux1_i686", "manylinux2010_x86_64", "manylinux2010_i686",
    "manylinux2014_x86_64", "manylinux2014_i686", "manylinux2014_aarch64",
    "manylinux2014_armv7l", "manylinux2014_ppc64", "manylinux2014_ppc64le",
    "manylinux2014_s390x", "linux_armv6l", "linux_armv7l",
})
_LINUX_ARCHES = frozenset({"x86_64", "i686", "aarch64", "armv7l", "ppc64le", "s390x",
                           "riscv64"})
_MANYLINUX_ARCHES = _LINUX_ARCHES | {"ppc64"}
_MACOS_ARCHES = frozenset({"ppc", "ppc64", "i386", "x86_64", "arm64", "intel", "fat", "fat3",
                           "fat32", "fat64", "universal", "universal2"})
_IOS_ARCHES = frozenset({"arm64", "x86_64"})
_ANDROID_ARCHES = frozenset({"armeabi_v7a", "arm64_v8a", "x86", "x86_64"})
_GLIBC = re.compile(r"(many|musl)linux_\d{1,3}_\d{1,3}_(\w+)\Z")
_MACOS = re.compile(r"macosx_(\d{1,3})_\d{1,3}_(\w+)\Z")
_IOS = re.compile(r"ios_\d{1,3}_\d{1,3}_(\w+?)_(?:iphoneos|iphonesimulator)\Z")
_ANDROID = re.compile(r"android_\d{1,3}_(\w+)\Z")
_LINUX = re.compile(r"linux_(\w+)\Z")
# PEP 425 interpreter tags: an implementation's letters and its version digits.
_INTERPRETER = re.compile(r"[a-z]+[0-9_]*\Z")
_ABI = re.compile(r"[a-z0-9_]+\Z")


def known_platform(tag: str) -> bool:
    """Whether an installer could match the wheel platform tag *tag*."""
    if tag in _STATIC:
        return True
    if match := _GLIBC.match(tag):
        arches = _MANYLINUX_ARCHES if match[1] == "many" else _LINUX_ARCHES
        return match[2] in arches
    if match := _MACOS.match(tag):
        return int(match[1]) >= 10 and match[2] in _MACOS_ARCHES
    if match := _IOS.match(tag):
        return match[1] in _IOS_ARCHES
    if match := _ANDROID.match(tag):
        return match[1] in _ANDROID_ARCHES
    if match := _LINUX.match(tag):
        return match[1] in _LINUX_ARCHES
    return False


def tag_problem(interpreter: str, abi: str, platform: str) -> str | None:
    """What is wrong with one of a wheel's tag triples, or None."""
    if not _INTERPRETER.match(interpreter):
        return f"unknown Python tag {interpreter!r}"
    if not _ABI.match(abi):
        return f"unknown ABI tag {abi!r}"
    if not known_platform(platform):
        return (f"unknown platform tag {platform!r} (known: any, win_*, manylinux*, "
                "musllinux_*, macosx_*, ios_*, android_*, linux_<arch>)")
    return None
