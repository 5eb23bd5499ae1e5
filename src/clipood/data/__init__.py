"""Dataset layouts, protocol splits, offline benchmark builders and image loading."""

from clipood.data.samples import ImageDataset, ImageDecodeError, ImageSample, load_rgb

__all__ = ["ImageDataset", "ImageDecodeError", "ImageSample", "load_rgb"]
