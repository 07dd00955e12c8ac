"""embedscope: embed a folder of images, reduce to 3D, explore with image-on-hover."""

__version__ = "0.1.0"
