"""Hyper-convolutional decoder: shapes, residual path, parameter count, loss."""

from __future__ import annotations

import pytest
import torch

from dnd.method.generator_model import HyperConvDecoder, HyperConvLayer, count_parameters


@pytest.mark.parametrize(
    "stages",
    [[], [[6, 8, 12]], [[6, 8, 12], [6, 8, 12], [16, 4, 20]], [[3, 2, 5], [9, 7, 3]]],
)
def test_decoder_shapes(stages: list[list[int]]) -> None:
    torch.manual_seed(0)
    dec = HyperConvDecoder((4, 5, 16), stages, (12, 6, 10), kernel=3)
    out = dec(torch.randn(2, 4, 5, 16))
    assert out.shape == (2, 12, 6, 10)
    assert len(dec.layers) == len(stages) + 1
    assert dec.input_shape == (4, 5, 16) and dec.output_shape == (12, 6, 10)


def test_mean_pooled_condition() -> None:
    """A mean-pooled condition has L = 1: (B, N, 1, D)."""
    dec = HyperConvDecoder((4, 1, 16), [[6, 8, 12]], (12, 6, 10), kernel=3)
    assert dec(torch.randn(2, 4, 1, 16)).shape == (2, 12, 6, 10)


def test_residual_only_when_shapes_match() -> None:
    torch.manual_seed(0)
    same = HyperConvLayer((3, 4, 5), (3, 4, 5), kernel=3)
    diff = HyperConvLayer((3, 4, 5), (3, 4, 6), kernel=3)
    assert same.residual and not diff.residual
    with torch.no_grad():  # silence the channel conv: the layer must reduce to the identity
        same.channel.weight.zero_()
        same.channel.bias.zero_()
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(same(x), x, rtol=0, atol=0)


def test_branches_combine() -> None:
    """(width_first + tanh(height_first) + bias) / 3, then the channel conv."""
    torch.manual_seed(0)
    layer = HyperConvLayer((2, 4, 6), (3, 5, 7), kernel=3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 2, 4, 6)
    y = torch.nn.functional.layer_norm(x, [4, 6], layer.norm.weight, layer.norm.bias).reshape(4, 4, 6)
    wf = layer.wf_h(layer.wf_w(y.transpose(1, 2)).transpose(1, 2))
    hf = torch.tanh(layer.hf_w(layer.hf_h(y).transpose(1, 2)).transpose(1, 2))
    z = ((wf + hf + layer.bias) / 3).reshape(2, 2, 5, 7)
    torch.testing.assert_close(layer(x), layer.channel(z))


def test_parameter_count() -> None:
    dec = HyperConvDecoder((4, 5, 16), [[6, 8, 12]], (12, 6, 10), kernel=3)
    assert count_parameters(dec) == sum(p.numel() for p in dec.parameters())

    def layer_params(ci, hi, wi, co, ho, wo, k):
        conv1d = lambda a, b: a * b * k + b  # noqa: E731
        return 2 * hi * wi + 2 * conv1d(wi, wo) + 2 * conv1d(hi, ho) + ho * wo + ci * co * k * k + co

    assert count_parameters(dec) == layer_params(4, 5, 16, 6, 8, 12, 3) + layer_params(6, 8, 12, 12, 6, 10, 3)


def test_hparams_rebuild_and_gradients() -> None:
    torch.manual_seed(0)
    dec = HyperConvDecoder((4, 5, 16), [[6, 8, 12]], (12, 6, 10), kernel=5)
    twin = HyperConvDecoder(**dec.hparams())
    twin.load_state_dict(dec.state_dict())
    x = torch.randn(3, 4, 5, 16)
    torch.testing.assert_close(twin(x), dec(x))
    dec(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_bad_shapes() -> None:
    dec = HyperConvDecoder((4, 5, 16), [], (12, 6, 10), kernel=3)
    with pytest.raises(ValueError, match="decoder expects"):
        dec(torch.randn(2, 4, 5, 15))
    with pytest.raises(ValueError, match="three positive integers"):
        HyperConvDecoder((4, 5, 16), [[6, 0, 2]], (12, 6, 10), kernel=3)


def test_local_head_is_position_wise_mixing_and_zero_init_gives_the_offset() -> None:
    """head=local: out[t, h, w] = sum_c U[t, c, h, w] z[c, h, w] + b (checked against an explicit
    einsum); output_init zero: the untrained decoder outputs exactly its offset."""
    from dnd.method.generator_model import LocalMix

    torch.manual_seed(0)
    mix = LocalMix(3, 5, 4, 6)
    with torch.no_grad():
        mix.bias.normal_()
    z = torch.randn(2, 3, 4, 6)
    u = mix.weight.detach().reshape(4, 6, 3, 5)  # (h, w, c, t)
    torch.testing.assert_close(mix(z), torch.einsum("bchw,hwct->bthw", z, u) + mix.bias)

    dec = HyperConvDecoder((4, 5, 16), [[6, 8, 12]], (12, 6, 10), kernel=3, output_offset=True, head="local",
                           zero_init_output=True)
    with torch.no_grad():
        dec.output_offset.normal_()
    torch.testing.assert_close(dec(torch.randn(2, 4, 5, 16)), dec.output_offset.expand(2, 12, 6, 10))
    assert dec.layers[-1].channel.weight.shape == (6 * 10, 6, 12)
    rebuilt = HyperConvDecoder(**dec.hparams())
    assert rebuilt.hparams() == dec.hparams() and dec.hparams()["head"] == "local"
    with pytest.raises(ValueError, match="head must be"):
        HyperConvDecoder((4, 5, 16), [], (12, 6, 10), kernel=3, head="dense")


def test_source_basis_generator_is_exact_order_free_and_starts_at_the_mean() -> None:
    from dnd.method.generator_model import SourceBasisGenerator, build_decoder, pooled_condition

    torch.manual_seed(0)
    gen = SourceBasisGenerator((4, 5, 16), 3, (12, 6, 10), hidden=8)
    gen.basis.normal_()
    cond = torch.randn(2, 4, 5, 16)
    cond[:, :, 3:] = 0  # padding (the encoder zeroes it) does not count in the pooled condition
    torch.testing.assert_close(pooled_condition(cond), cond[:, :, :3].mean(dim=(1, 2)))
    # zero-initialized output layer: uniform weights, i.e. the mean of the basis
    torch.testing.assert_close(gen(cond), gen.basis.mean(0).expand(2, 12, 6, 10))
    with torch.no_grad():
        gen.mlp[-1].weight.normal_()
        gen.mlp[-1].bias.copy_(torch.tensor([0.0, 50.0, 0.0]))
    out = gen(cond)
    torch.testing.assert_close(gen(cond[:, torch.randperm(4)]), out)  # the order of the prompts is irrelevant
    one_hot = gen.coefficients(cond)
    torch.testing.assert_close(one_hot.sum(-1), torch.ones(2))
    assert bool((one_hot[:, 1] > 0.99).all())
    torch.testing.assert_close(out[0], gen.basis[1], atol=1e-3 * float(gen.basis.abs().max()), rtol=0)
    rebuilt = build_decoder({"design": "basis", **gen.hparams()})
    rebuilt.load_state_dict(gen.state_dict())
    torch.testing.assert_close(rebuilt(cond), out)
    # checkpoints written before there were designs have none: the hyper-convolutional decoder
    assert build_decoder(HyperConvDecoder((4, 5, 16), [], (12, 6, 10), 3).hparams()).design == "hyperconv"
    with pytest.raises(ValueError, match="unknown generator design"):
        build_decoder({"design": "mlp"})
