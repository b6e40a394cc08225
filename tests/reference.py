"""No-cache references for the search tests: one full unpadded forward of a whole prefix."""

from __future__ import annotations

import torch

from arbor.core.tree import SearchTree


@torch.no_grad()
def recompute(model, head, segments, temperature: float = 1.0) -> tuple[list[list[float]], list[float]]:
    """Per segment of ``segments``: its tokens' log-probs (at ``temperature``) and the value at its end."""
    ids = [t for seg in segments for t in seg]
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0].float() / temperature, dim=-1)  # [T, V]
    values = head(out.hidden_states[-1])[0]  # [T]
    per_seg, vals, start = [], [], 0
    for seg in segments:
        per_seg.append([float(logp[start + j - 1, t]) for j, t in enumerate(seg)] if start else [])
        start += len(seg)
        vals.append(float(values[start - 1]))
    return per_seg, vals


def worst_gap_to_recomputation(tree: SearchTree, model, head) -> float:
    """The largest gap between a tree's recorded step log-probs and value estimates and their recomputation."""
    worst = 0.0
    for node in tree.nodes[1:]:
        logps, values = recompute(model, head, tree.segments(node))
        assert len(logps[-1]) == len(node.logprobs)
        worst = max(worst, max(abs(a - b) for a, b in zip(logps[-1], node.logprobs)))
        worst = max(worst, abs(values[-1] - node.value_estimate))
    root_values = recompute(model, head, tree.segments(tree.root))[1]
    return max(worst, abs(root_values[-1] - tree.root.value_estimate))
