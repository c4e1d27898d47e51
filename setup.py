from setuptools import find_packages, setup

setup(
    name="vidnl",
    version="0.1.0",
    description="Video action recognition and video re-identification with nonlocal blocks",
    packages=find_packages(include=["vidnl", "vidnl.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "decord==0.6.0",
        "av>=14",
        "fvcore",
        "iopath",
        "numpy",
        "pyyaml",
        "scipy",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "opencv-python-headless",
    ],
    # pytorchvideo: the peer whose models and NonLocal the tests compare vidnl with (not imported by vidnl)
    extras_require={"test": ["pytest", "pytorchvideo==0.1.5"]},
)
