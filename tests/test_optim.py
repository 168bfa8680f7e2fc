"""FlatAdam: Adam over one flat buffer takes exactly torch's per-tensor Adam steps."""

from __future__ import annotations

import copy

import torch

from flowcli.flow.config import FlowConfig
from flowcli.flow.optim import FlatAdam, WeightAverage
from flowcli.flow.torch_flow import RealNVP


def _flow() -> RealNVP:
    torch.manual_seed(0)
    flow = RealNVP(FlowConfig(features=5, layers=3, hidden=8)).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0, 0.3)
    return flow


def _train(flow: RealNVP, optimizer, clip) -> None:
    x = torch.randn(6, 64, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for batch in x:
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        clip()
        optimizer.step()


def test_flat_adam_takes_torch_adams_steps_with_clipping():
    reference, flat = _flow(), _flow()
    adam = torch.optim.Adam(reference.parameters(), lr=0.01, foreach=False)
    _train(reference, adam, lambda: torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5))
    flat_adam = FlatAdam(flat, lr=0.01)
    _train(flat, flat_adam, lambda: flat_adam.clip_grad_norm(0.5))
    moved = 0
    for (name, expected), actual in zip(reference.state_dict().items(), flat.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-12, msg=name)
        moved += not torch.equal(actual, _flow().state_dict()[name])
    assert moved == len(reference.state_dict())  # every tensor was trained through the flat buffer


def test_flat_adam_zeroes_in_place_and_restarts():
    flow = _flow()
    optimizer = FlatAdam(flow, lr=0.01)
    first = next(flow.parameters())
    _train(flow, optimizer, lambda: None)
    assert first.grad is not None and first.grad.abs().sum() > 0
    optimizer.zero_grad()
    assert first.grad is not None and first.grad.abs().sum() == 0  # still a view of the buffer
    best = copy.deepcopy(flow.state_dict())
    optimizer.restart(0.001)
    assert optimizer.steps == 0 and not optimizer.first.any() and not optimizer.second.any() and optimizer.lr == 0.001
    flow.load_state_dict(best)  # in place: the weights stay in the optimizer's buffer
    _train(flow, optimizer, lambda: None)
    assert not torch.equal(flow.state_dict()["couplings.0.linears.0.weight"], best["couplings.0.linears.0.weight"])


def test_weight_average_is_an_exponential_average_applied_only_within_its_block():
    """With a decay that warms up as (1 + t)/(10 + t) over the first steps."""
    flow = _flow()
    optimizer = FlatAdam(flow, lr=1e-2)
    average = WeightAverage(optimizer, decay=0.9)
    expected = optimizer.flat.detach().clone()
    x = torch.randn(5, 32, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for t, batch in enumerate(torch.cat([x, x])):
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        average.update()
        decay = min(0.9, (1 + t) / (10 + t))  # 0.1, 0.18, …, 0.9 from the 71st step: here 10 steps
        expected = decay * expected + (1 - decay) * optimizer.flat.detach()
    raw = copy.deepcopy(flow.state_dict())
    assert not torch.allclose(expected, optimizer.flat)  # the average lags the weights
    with average.applied():
        torch.testing.assert_close(optimizer.flat.detach(), expected)
        inside = flow.log_prob(x[0])  # the module itself sees the average
    for name, value in flow.state_dict().items():
        torch.testing.assert_close(value, raw[name], rtol=0, atol=0)
    assert not torch.allclose(inside, flow.log_prob(x[0]))
    average.reset()
    torch.testing.assert_close(average.average, optimizer.flat.detach(), rtol=0, atol=0)
    assert average.steps == 0
