"""PEP 517 build backend: setuptools' ``build_meta``, run on a copy of the source tree.

setuptools writes its scratch output (``build/``, ``atwu_plugin.egg-info/``) next to
``setup.cfg``, so a plain ``pip install /path/to/atwu-plugin`` (pip builds in place) left both
in the user's checkout. Wheels, sdists and their metadata are built here in a temporary copy;
the results land where the frontend asked. Editable installs must point at the real tree and
are setuptools' own, unchanged.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401 - editable installs: setuptools' own, in place
    build_editable,
    get_requires_for_build_editable,
    prepare_metadata_for_build_editable,
)

# git-ignored or never packaged: not worth copying
_SKIP = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__",
                               ".pytest_cache", ".hypothesis", "outputs")


@contextmanager
def _in_copy():
    source = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="atwu-build-") as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(source, copy, ignore=_SKIP, symlinks=True)
        os.chdir(copy)
        try:
            yield
        finally:
            os.chdir(source)


def get_requires_for_build_wheel(config_settings=None):
    with _in_copy():  # setuptools runs egg_info to answer
        return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    with _in_copy():
        return _setuptools.get_requires_for_build_sdist(config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    wheel_directory = os.path.abspath(wheel_directory)
    metadata_directory = metadata_directory and os.path.abspath(metadata_directory)
    with _in_copy():
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    sdist_directory = os.path.abspath(sdist_directory)
    with _in_copy():
        return _setuptools.build_sdist(sdist_directory, config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    metadata_directory = os.path.abspath(metadata_directory)
    with _in_copy():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
