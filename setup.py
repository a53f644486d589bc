"""Installable package for the DDSP experiment platform.

crepe 0.0.16 cannot be built by a plain ``pip install`` today (its setup.py imports
``pkg_resources`` and downloads weights at build time); see README.md, "Installing crepe".
It is therefore installed before this package (``make venv`` does it) and listed here so
that pip checks it is present.
"""

from setuptools import find_packages, setup

setup(
    name='ddsp-platform',
    version='0.1.0',
    description=(
        'Differentiable Digital Signal Processing on TensorFlow 2 / Keras 3, with Beam '
        'dataset pipelines and a tf.distribute trainer tracked in MLflow.'
    ),
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=find_packages(include=['ddsp_core', 'ddsp_core.*', 'pipelines', 'pipelines.*',
                                    'trainer', 'trainer.*']),
    package_data={'trainer.model': ['presets/*.yaml'],
                  'trainer.experiments': ['templates/*.html']},
    install_requires=[
        'tensorflow>=2.21,<2.22',
        'keras>=3.10,<4',
        'numpy>=1.26,<2.5',
        'scipy>=1.13,<2',
        'apache-beam>=2.70,<3',
        'crcmod>=1.7,<2',  # fast CRC32C for Beam's TFRecord sink
        'tfds-nightly>=4.9.9.dev0',
        'mlflow>=3.15,<3.18',
        'crepe==0.0.16',
        'soundfile>=0.12,<0.15',
        'soxr>=0.5,<2',
        'pyyaml>=6,<7',
        'tqdm>=4.66,<5',
        'matplotlib>=3.8,<4',
        'jinja2>=3.1,<4',  # ddsp-compare's listening report
        'optuna>=4.2,<6',
        'cmaes>=0.11,<1',  # Optuna's CMA-ES sampler (ddsp-sweep --algorithm cmaes)
        'psutil>=5.9,<8',  # MLflow's system metrics (CPU, memory, disk, network)
        'nvidia-ml-py>=12,<14',  # MLflow's GPU system metrics where a GPU is present
    ],
    extras_require={
        'test': ['pytest>=8,<10', 'ruff>=0.6', 'apache-beam[gcp]>=2.70,<3', 'selenium>=4.20,<5',
                 'mktestdocs>=0.2,<1', 'uv>=0.5,<1',
                 'psycopg[binary]>=3.2,<4', 'psycopg2-binary>=2.9,<3',
                 # GCS's JSON API on loopback for the gs:// tests (tests/gcs_emulator.py)
                 'gcp-storage-emulator>=2026.7'],
        'gcp': ['apache-beam[gcp]>=2.70,<3'],
        # Drivers for a PostgreSQL server holding MLflow's runs (psycopg) and Optuna's study
        # (SQLAlchemy's default postgresql:// driver, psycopg2).
        'postgres': ['psycopg[binary]>=3.2,<4', 'psycopg2-binary>=2.9,<3'],
    },
    entry_points={
        'console_scripts': [
            'ddsp-prepare = pipelines.prepare_dataset:main',
            'ddsp-train = trainer.training.train:main',
            'ddsp-sync = trainer.tracking.sync:main',
            'ddsp-eval = pipelines.evaluate:main',
            'ddsp-transfer = trainer.serving.transfer:main',
            'ddsp-export = trainer.serving.export:main',
            'ddsp-sweep = pipelines.sweep:main',
            'ddsp-compare = trainer.experiments.compare:main',
        ],
    },
)
