"""Data layer: data specs -> square uint8 image batches.

Main entry point: :func:`open_images` (see :mod:`nolabel.data.imageset`).
"""

from nolabel.data.batch import Batch
from nolabel.data.decode import BadImageError, decode_image, to_square_uint8
from nolabel.data.demo import generate_demo
from nolabel.data.errors import DataError
from nolabel.data.imageset import ImageSet, open_images, probe_image_size
from nolabel.data.sources import Source
from nolabel.data.specs import open_source

__all__ = [
    "open_images", "probe_image_size", "ImageSet", "Batch", "open_source", "Source",
    "DataError", "BadImageError", "decode_image", "to_square_uint8", "generate_demo",
]
