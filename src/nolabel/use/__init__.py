"""Using a trained backbone on a collection of images: ``nolabel embed``, ``nolabel
neighbors``, ``nolabel duplicates`` and their Python API (``nolabel.embed``,
``nolabel.neighbors``, ``nolabel.duplicates``).

- :mod:`.collection`: a model's features of every readable image of a data spec, with
  their paths, through the feature cache of :mod:`nolabel.evaluate.cache`;
- :mod:`.inputs`: models and images given as objects (modules, tensors, image files);
- :mod:`.embed`, :mod:`.neighbors`, :mod:`.duplicates`: one command each;
- :mod:`.grid`, :mod:`.publish`: PNG grids, and outputs written whole or not at all;
- :mod:`.commands`: the argparse wiring; :mod:`.api`: the Python functions.
"""
