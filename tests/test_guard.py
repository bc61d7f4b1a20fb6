import pytest
import torch

from selfplay.train.guard import NonFiniteGradGuard, NonFiniteWeightsError, check_finite


def test_nan_gradient_step_is_skipped_and_counted():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    guard = NonFiniteGradGuard()

    model(torch.randn(4, 3)).sum().backward()
    model.weight.grad[0, 0] = float("nan")
    guard.on_pre_optimizer_step(None, None, None, model=model)
    optimizer.step()
    assert guard.skipped_steps == 1
    assert all(a.equal(b) for a, b in zip(before, model.parameters()))  # nothing moved

    model(torch.randn(4, 3)).sum().backward()  # a finite step goes through
    guard.on_pre_optimizer_step(None, None, None, model=model)
    optimizer.step()
    assert guard.skipped_steps == 1
    assert not model.weight.equal(before[0])


def test_non_finite_weights_are_refused():
    model = torch.nn.Linear(2, 2)
    check_finite(model)
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(NonFiniteWeightsError, match="bias is not finite"):
        check_finite(model)


def test_history_mean_first_and_last_never_overlap():
    from selfplay.train.setup import history_mean

    history = [{"loss": 0.7}, {"loss": 0.6}, {"other": 1}, {"loss": float("nan")}]
    assert history_mean(history, "loss", last=False) == 0.7 and history_mean(history, "loss", last=True) == 0.6
    six = [{"loss": v} for v in (6, 5, 4, 3, 2, 1)]
    assert history_mean(six, "loss", last=False) == 5 and history_mean(six, "loss", last=True) == 2
    assert history_mean([], "loss", last=True) is None
