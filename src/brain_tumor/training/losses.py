"""The training losses beside cross-entropy: pure functions of logits, feature maps and masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from brain_tumor.data.counterfactual import ERASED


def counterfactual_loss(logits: torch.Tensor, labels: torch.Tensor,
                        class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy to the label for ordinary slices (with ``class_weights`` and
    ``label_smoothing``, as the plain loss) and to the uniform distribution, unweighted, for slices
    labelled :data:`ERASED` (tumour erased: no class is right); the two averaged by their shares of
    the batch. Smoothing leaves the erased target as it is: it is uniform already."""
    kept = labels != ERASED
    n = len(labels)
    loss = logits.new_zeros(())
    if kept.any():
        loss = loss + F.cross_entropy(logits[kept], labels[kept], weight=class_weights,
                                      label_smoothing=label_smoothing) * (int(kept.sum()) / n)
    if (~kept).any():
        uniform = -F.log_softmax(logits[~kept], dim=1).mean(dim=1)  # cross-entropy to 1/C each
        loss = loss + uniform.sum() / n
    return loss


def context_evidence_penalty(features: torch.Tensor, fc_weight: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """How much the context outside the tumour alone tells the classes apart.

    The logits of a ResNet are the class activation maps (Zhou et al. 2016) averaged over the
    feature map, plus the bias: ``logit_c = mean_ij(w_c . f_ij) + b_c``. Their part from the cells
    outside the tumour, ``o_c = sum_ij (1 - m_ij) w_c . f_ij / (h w)`` (``m``: the share of each
    cell inside the tumour's box), is the context's say. The penalty is the cross-entropy of
    ``softmax(o)`` to the uniform distribution less ``log C``: 0 when the context favours no class,
    growing as it picks one (a "right for the right reasons" loss, Ross et al. 2017, on class
    activation maps instead of input gradients: no second backward pass).

    What it cannot do: a cell of the last stage sees most of the image (ResNet-50's receptive
    field), so the penalty governs where evidence is attributed on the feature map, not which
    pixels it comes from; context can still reach the logits through the cells over the tumour.
    Whether a model trained with it stops naming erased tumours is for ``brain-tumor
    shortcut-test`` to say. The training loss logged (``train_loss``) includes the weighted
    penalty, logged alone as ``train_context_penalty``.

    Args:
        features: the last stage's map ``[B, K, h, w]`` (before pooling).
        fc_weight: the classifier's weights ``[C, K]``.
        masks: tumour masks ``[B, 1, H, W]`` at the image's size (non-zero inside the grown box);
            an empty mask (no box known) leaves that slice out.

    Returns the mean over the slices with a box (0 when none has one).
    """
    grid = (int(features.shape[-2]), int(features.shape[-1]))
    inside = F.adaptive_avg_pool2d((masks > 0).float(), grid)  # [B, 1, h, w]: each cell's share inside
    boxed = inside.flatten(1).sum(1) > 0
    if not boxed.any():
        return features.new_zeros(())
    outside = ((1 - inside[boxed]) * features[boxed]).mean(dim=(2, 3))  # [b, K]
    context_logits = outside @ fc_weight.t()  # [b, C]
    classes = fc_weight.shape[0]
    return (-F.log_softmax(context_logits, dim=1).mean(dim=1) - math.log(classes)).mean()


def tumour_map_loss(map_logits: torch.Tensor, masks: torch.Tensor, erased: torch.Tensor) -> torch.Tensor:
    """Where the tumour is, cell by cell, and whether there is one at all.

    Each cell's target is its share inside the tumour's (grown) box; a slice whose tumour was
    erased (``erased``) has none anywhere, so its cells, seen in the same context as those of the
    slice with its tumour, must all say "no tumour". Two terms, added: the binary cross-entropy of
    every cell against its share, and that of the slice's strongest cell against "this slice holds
    a tumour" (the evidence used at inference, :func:`brain_tumor.model.tumour_evidence`). Slices
    with neither a box nor an erased tumour are left out; 0 when none is left.

    Args:
        map_logits: the tumour map ``[B, 1, h, w]`` (:func:`brain_tumor.model.tumour_map_logits`).
        masks: tumour masks ``[B, 1, H, W]`` at the image's size (non-zero inside the grown box).
        erased: ``[B]`` booleans, the slices whose tumour was erased.
    """
    grid = (int(map_logits.shape[-2]), int(map_logits.shape[-1]))
    target = F.adaptive_avg_pool2d((masks > 0).float(), grid)  # [B, 1, h, w]: each cell's share inside
    target = torch.where(erased.view(-1, 1, 1, 1), torch.zeros_like(target), target)
    kept = erased | (target.flatten(1).sum(1) > 0)
    if not kept.any():  # zero, still joined to the head (DDP expects a gradient for every parameter)
        return (map_logits.float() * 0).sum()
    cells = map_logits[kept].float()
    cell_loss = F.binary_cross_entropy_with_logits(cells, target[kept])
    strongest = cells.flatten(1).amax(1)
    slice_loss = F.binary_cross_entropy_with_logits(strongest, (~erased[kept]).float())
    return cell_loss + slice_loss
