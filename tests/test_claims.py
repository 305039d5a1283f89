"""xh.claim: a lesson's sentence about its own output, checked where it is made."""

import math

import pytest
import torch

import xai_helpers as xh


def test_a_claim_that_holds_prints_the_measured_value(capsys):
    assert xh.claim("the kernel weight at half is 0.25", torch.tensor(0.2504), equals=0.25) is None
    assert capsys.readouterr().out == "✓ the kernel weight at half is 0.25 (measured 0.25)\n"
    xh.claim("Sobel's LeRF beats CAM's", 0.73 > 0.62)
    assert capsys.readouterr().out == "✓ Sobel's LeRF beats CAM's\n"


def test_a_drifted_number_fails_at_the_precision_the_prose_quotes():
    # "0.25" is quoted with two decimals, so 0.2549 still reads as 0.25 and 0.2551 does not.
    xh.claim("w = 0.25", 0.2549, equals=0.25)
    with pytest.raises(xh.ClaimError, match=r"claims that w = 0.25, but the value is 0.255, not equal to 0.25 \(within 0.005\)"):
        xh.claim("w = 0.25", 0.2551, equals=0.25)
    with pytest.raises(xh.ClaimError, match="within 0.0005"):
        xh.claim("r = 0.992", 0.9926, equals=0.992)
    xh.claim("r = 0.992 to 0.001", 0.9926, equals=0.992, tol=0.001)


@pytest.mark.parametrize("bounds, value", [({"below": 0.5}, 0.5), ({"above": 0.5}, 0.5), ({"at_most": 0.5}, 0.51),
                                           ({"at_least": 0.5}, 0.49), ({"below": 1, "above": 0}, 1.5)])
def test_each_bound_fails_when_crossed(bounds, value):
    with pytest.raises(xh.ClaimError):
        xh.claim("bounded", value, **bounds)


def test_a_false_comparison_or_a_non_number_fails():
    with pytest.raises(xh.ClaimError, match="its output says otherwise"):
        xh.claim("A beats B", 0.62 > 0.73)
    with pytest.raises(xh.ClaimError, match="the value is nan"):
        xh.claim("finite", math.nan, below=1)
    with pytest.raises(xh.ClaimError, match="compares numbers, got str"):
        xh.claim("numeric", "0.25", equals=0.25)
    with pytest.raises(xh.ClaimError, match="compares numbers, got bool"):
        xh.claim("numeric", True, equals=1)
    assert issubclass(xh.ClaimError, AssertionError)  # pytest and nbval report it as a failed check


def test_a_residual_is_printed_by_its_size_not_its_digits(capsys):
    # 2.4e-07 with one thread, 3.1e-07 with two: the printed line must not change.
    xh.claim("the values add up", 2.43e-07, at_most=1e-6)
    one = capsys.readouterr().out
    xh.claim("the values add up", 3.06e-07, at_most=1e-6)
    assert capsys.readouterr().out == one == "✓ the values add up (measured below 1e-4 in size)\n"
    xh.claim("exactly zero", 0.0, equals=0)
    assert capsys.readouterr().out == "✓ exactly zero (measured 0)\n"
