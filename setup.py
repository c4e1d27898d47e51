from setuptools import find_packages, setup

# decord (DATA.DECODING_BACKEND decord / auto) is optional: PyAV decodes everything without it.
# decord 0.6.0 ships wheels for any Python 3 on manylinux2010 x86_64 and win_amd64 only (its macOS
# wheels stop at CPython 3.8, there are none for aarch64), so the extra installs it only there.
DECORD = ["decord==0.6.0; (sys_platform == 'linux' and platform_machine == 'x86_64') or "
          "(sys_platform == 'win32' and platform_machine == 'AMD64')"]
# ONNX export and the check of the exported graph with onnxruntime.
EXPORT = ["onnx>=1.23.2", "onnxscript>=0.7.2", "onnxruntime>=1.32.0"]

setup(
    name="vidnl",
    version="0.1.0",
    description="Video action recognition and video re-identification with nonlocal blocks",
    packages=find_packages(include=["vidnl", "vidnl.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "av>=14",  # PyAV: always there, decodes every video when decord is absent
        "fvcore",  # CfgNode (iopath comes with it; vidnl does not import iopath itself)
        "numpy",
        "pyyaml",
        "scipy",
        "tqdm",
        "tensorboard",
        "matplotlib",
        "opencv-python-headless",
        "pillow",  # frame folders and image datasets (came only through torchvision before)
    ],
    extras_require={
        "decord": DECORD,
        "export": EXPORT,
        # pytorchvideo: the peer whose models and NonLocal the tests compare vidnl with (not imported by vidnl)
        "test": ["pytest", "pytorchvideo==0.1.5", *DECORD, *EXPORT],
    },
)
