"""The anchor set groups anchors of similar length into chunks; every value it returns must still
be in the caller's order and per-group means must still pick the right anchors."""

from __future__ import annotations

import torch

from ostselect.scoring.anchors import PreparedAnchors
from scoring_toy_model import ToyProxy, make_samples


def test_chunks_follow_length_but_results_follow_input_order():
    proxy = ToyProxy(trainable="all")
    samples = make_samples(9, seed=5, prefix="a", groups=("geometry", "algebra"))
    anchors = PreparedAnchors(proxy, samples, batch_size=2, group_field="group")
    assert anchors.order != list(range(len(samples)))  # really reordered
    theta = {k: v.detach() for k, v in proxy.trainable_parameters().items()}

    alone = torch.stack([proxy.per_sample_loss(proxy.prepare([s]), theta)[0] for s in samples])
    torch.testing.assert_close(anchors.losses(theta), alone.detach())
    torch.testing.assert_close(anchors.reference_losses(), alone.detach())

    total, per_group = anchors.gradients(theta)
    leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    losses = torch.stack([proxy.per_sample_loss(proxy.prepare([s]), leaves)[0] for s in samples])
    for name, idx in [("<all>", list(range(len(samples)))), *anchors.groups.items()]:
        want = torch.autograd.grad(losses[idx].mean(), list(leaves.values()), retain_graph=True)
        got = total if name == "<all>" else per_group[name]
        for k, g in zip(leaves, want, strict=True):
            torch.testing.assert_close(got[k], g, msg=f"{name}: {k}")
    value, groups = anchors.value(theta)
    assert abs(value - float(alone.mean())) < 1e-6
    for g, idx in anchors.groups.items():
        assert abs(groups[g] - float(alone[idx].mean())) < 1e-6
