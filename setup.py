"""Packaging glue: ships the top-level ``migrations/`` folder inside the package as
``worker.migrations`` so that ``crmsync db upgrade`` works from a wheel as well as a clone."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["worker", "worker.*"])
    + ["worker.migrations", "worker.migrations.versions"],
    package_dir={"worker.migrations": "migrations"},
)
