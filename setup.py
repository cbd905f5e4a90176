"""slukd: knowledge distillation for continual spoken language understanding and audio captioning."""

from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / "slukd" / "version.py").read_text(), version)

setup(
    name="slukd",
    version=version["__version__"],
    description=(
        "Knowledge distillation for speech: class-incremental SLU on SLURP and efficient audio captioning, "
        "built on SpeechBrain"
    ),
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["slukd", "slukd.*"]),
    install_requires=[
        # torch 2.14.1 + torchaudio 2.11.0 + speechbrain 1.1.2 is the combination verified to install together.
        "torch>=2.4,<=2.14.1",
        "torchaudio>=2.4,<=2.11.0",
        "speechbrain>=1.1.0,<1.2",
        "hyperpyyaml>=1.2",
        "jiwer>=3.0",
        "pandas>=2.0",
        "soundfile>=0.12",
        "sentencepiece>=0.1.99",
        "matplotlib>=3.7",
        "numpy>=1.24",
        "tqdm>=4.60",
        "pycocoevalcap>=1.2",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.2", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["slukd=slukd.cli:main"]},
)
