import math

import torch

from ktedge.model.losses import MDWALoss


def test_mdwa_matches_hand_computed_values_on_a_small_case():
    # occurrence 0.5 and 0.25 -> w proportional to 2 and 4, normalised to mean 1: 2/3 and 4/3
    loss = MDWALoss(torch.tensor([0.5, 0.25]), margin=0.05, discard=0.95, gamma=2.0)
    logits = torch.tensor([[0.0, math.log(4.0)], [math.log(97 / 3), 0.0]], requires_grad=True)  # p 0.5, 0.8 / 0.97, 0.5
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    terms = [
        -(2 / 3) * math.log(0.5),  # positive, p 0.5
        -(4 / 3) * 0.75 ** 2 * math.log(1 - 0.75),  # negative, p 0.8 -> p_m 0.75
        0.0,  # negative predicted 0.97 >= 0.95: discarded as likely mislabelled
        -(4 / 3) * 0.45 ** 2 * math.log(1 - 0.45),  # negative, p 0.5 -> p_m 0.45
    ]
    value = loss(logits, labels)
    assert math.isclose(value.item(), sum(terms) / 4, rel_tol=1e-6)
    value.backward()
    assert logits.grad[1, 0] == 0  # the discarded negative gives no gradient
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # push the positive up, the hard negative down


def test_mdwa_gives_easy_negatives_no_gradient_and_weighs_rare_units_more():
    loss = MDWALoss(torch.tensor([0.5, 0.1]))
    easy = torch.tensor([[math.log(0.04 / 0.96), math.log(0.04 / 0.96)]], requires_grad=True)  # p 0.04 <= margin
    loss(easy, torch.zeros(1, 2)).backward()
    assert torch.all(easy.grad == 0)
    missed = torch.zeros(1, 2, requires_grad=True)  # both units active, both predicted 0.5
    loss(missed, torch.ones(1, 2)).backward()
    assert missed.grad[0, 1] < missed.grad[0, 0] < 0  # the rarer unit (10 %) is pushed harder
