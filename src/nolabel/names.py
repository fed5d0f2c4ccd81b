"""Names the command line shows in its help, importable without torch so that
``nolabel --help`` and ``nolabel --version`` answer at once.

The registries stay the truth for methods, backbones and evaluation protocols (a new one
is one file that registers itself); tests/test_cli.py and tests/evaluate/test_protocols.py
check these lists against them, so a new name added there and not here fails a test.
The patch-token pools are defined here and imported by the evaluation layer; so are the
export formats (:mod:`nolabel.export_formats`).
"""

METHODS = ("barlowtwins", "byol", "deepcluster", "deepclusterv2", "deepercluster", "dino", "ibot", "jigsaw", "mae",
           "mocov2", "relativeloc", "rotnet", "sela", "simclr", "simsiam", "swav", "vicreg")   # nolabel.methods, sorted
BACKBONES = ("resnet18", "resnet50", "vit_tiny", "vit_small", "vit_base")           # nolabel.backbones
EVAL_PROTOCOLS = ("knn", "linear", "logistic", "fewshot", "finetune", "clustering", "retrieval", "copydetect",
                  "attention", "tsne")                       # nolabel.evaluate.protocols, in `eval all` order
PATCH_POOLS = ("none", "avg", "gem")                                                 # nolabel.evaluate.cache
EXPORT_FORMATS = ("safetensors", "timm", "torchscript")                             # nolabel.export_formats
