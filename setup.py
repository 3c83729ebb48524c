"""Package build. The C++/CUDA ops extension arrives with distill/ops."""
from setuptools import setup

setup()
