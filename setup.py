"""Package layout only: the folder ``drivers/`` installs as the import package ``novalite_drivers``.

pyproject.toml cannot express "find the packages under a folder and install them under another
name", so this file does just that; everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

driver_packages = [
    "novalite_drivers" + name[len("drivers"):] for name in find_packages(include=["drivers", "drivers.*"])
]
setup(
    packages=find_packages(include=["novalite", "novalite.*"]) + driver_packages,
    package_dir={"novalite_drivers": "drivers"},
)
