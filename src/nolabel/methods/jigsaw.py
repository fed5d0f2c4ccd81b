"""Jigsaw puzzles (Noroozi and Favaro, "Unsupervised Learning of Visual Representations by
Solving Jigsaw Puzzles", ECCV 2016; thesis Section 2.1; lecture 002, "Solving Jigsaw Puzzles").

One augmented view is cut into a 3x3 grid of tiles with a random gap/jitter in each cell
(``ops.tiles``); the tiles are shuffled by a permutation drawn from a fixed set of
``n_permutations`` permutations with maximal Hamming distance (``ops.permutations``,
Algorithm 1); every tile goes through the shared backbone (the paper's context-free
network: siamese branches with shared weights, Fig. 3), the 9 features are concatenated in
the shuffled order and an MLP predicts the permutation's index (cross-entropy).

Convention: ``perm = perm_set[label]``; position i of the puzzle shows tile ``perm[i]``
(raster order), so the tiles in original order are ``shuffled[:, argsort(perm)]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nolabel.heads import mlp
from nolabel.methods import register
from nolabel.methods._siamese import ADAMW_SMALL_BATCH
from nolabel.methods.base import Method, RunShape
from nolabel.monitor import pretext_health
from nolabel.ops.permutations import max_hamming_permutations
from nolabel.ops.tiles import cut_tiles, encode_tiles, normalize_tiles, sample_tile_origins, tile_grid
from nolabel.view_presets import tile_views

GRID = 3                            # 3x3 tiles (Section 3)


@dataclass
class JigsawConfig:
    # Size of the permutation set = number of classes. The paper uses 1000 (Section 3.2,
    # Table 3: 1000 gives the best transfer; 100 loses about 1 point of detection mAP).
    # Default 100: a 1000-way head needs far more images than the small data sets nolabel
    # targets to see each class often; set 1000 for ImageNet-scale runs.
    n_permutations: int = 100
    permutation_seed: int = 0            # the set is deterministic from this seed
    # Tile side / cell side: 64 px tiles in 75 px cells (Section 3.3), placed uniformly in
    # the cell, so a random gap separates neighbouring tiles (avg. 11 px in the paper).
    tile_fraction: float = 64 / 75
    normalize_tiles: bool = True         # per-tile mean/std normalisation (Section 3.3)
    # Head: per-tile features concatenated (9 x D) -> hidden -> n_permutations; the paper's
    # fc7 has 4096 units on 9 x 512 fc6 features (Fig. 3). Smaller default for small data.
    hidden_dim: int = 1024
    # The view the grid is cut from: the paper's 225 px random crop of a 256 px image covers
    # ~77% of it; we sample area (0.5, 1) with flips, colour jitter and grayscale p 0.3 (the
    # paper's remedy for chromatic-aberration shortcuts is to break colour cues, Section 3.3).
    crop_scale_min: float = 0.5
    grayscale: float = 0.3


@register
class Jigsaw(Method):
    name = "jigsaw"
    Config = JigsawConfig
    # Paper (Section 4): SGD without batch norm, lr 0.01, batch 256, 350k iterations
    # (--optim.optimizer=sgd --optim.lr=0.01). Default AdamW (ADAMW_SMALL_BATCH): the default
    # backbone is a ViT, trained with AdamW in nolabel's other methods, at small batches.
    default_optim = dict(ADAMW_SMALL_BATCH)
    encoder_prefix = "backbone"

    def __init__(self, cfg: JigsawConfig, backbone: nn.Module, shape: RunShape):
        super().__init__(cfg, backbone, shape)
        self.backbone = backbone
        self.layout = tile_grid(shape.image_size, cfg.tile_fraction, jitter_fraction=None, grid=GRID)
        perms = max_hamming_permutations(cfg.n_permutations, GRID * GRID, seed=cfg.permutation_seed)
        self.register_buffer("perm_set", perms)                          # (P, 9) int64
        self.head = mlp(GRID * GRID * backbone.num_features, cfg.hidden_dim, cfg.n_permutations,
                        n_layers=2, norm="bn")

    def view_specs(self):
        return tile_views(self.shape.image_size, self.cfg.crop_scale_min, self.cfg.grayscale)

    def make_puzzle(self, view: Tensor) -> tuple[Tensor, Tensor]:
        """view (B,3,S,S) -> (shuffled tiles (B, 9, 3, t, t), labels (B,) int64 on view's device)."""
        b = view.shape[0]
        tiles = cut_tiles(view, sample_tile_origins(b, self.layout), self.layout.tile)   # (B, 9, 3, t, t)
        if self.cfg.normalize_tiles:
            tiles = normalize_tiles(tiles)
        labels = torch.randint(self.cfg.n_permutations, (b,)).to(view.device)
        return shuffle_tiles(tiles, self.perm_set[labels]), labels

    def training_step(self, views, info):
        puzzle, labels = self.make_puzzle(views[0])
        feats = encode_tiles(self.backbone, puzzle)                      # (B, 9, D), shuffled order
        logits = self.head(feats.flatten(1))                             # (B, P)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"pretext_acc": accuracy, "chance": 1.0 / self.cfg.n_permutations}

    def health(self, epoch_means):
        return pretext_health(epoch_means)


def shuffle_tiles(tiles: Tensor, perms: Tensor) -> Tensor:
    """tiles (B, T, ...) and one permutation per image (B, T) -> (B, T, ...) with
    ``out[b, i] = tiles[b, perms[b, i]]``."""
    index = perms.to(tiles.device).view(*perms.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return torch.gather(tiles, 1, index)
