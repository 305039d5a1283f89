"""A lesson's claims about its own outputs, checked where they are made.

When a lesson's prose says "the kernel weight at half the superpixels is 0.25"
or "Sobel's LeRF beats CAM's", the number or the comparison must come from an
output above it, and a check must fail the moment that output moves away from
it. :func:`claim` is that check: it prints the claim with the measured value,
and raises :class:`ClaimError` when the claim no longer holds, so the lesson
stops there (and its nbval test fails) instead of teaching a sentence its own
output contradicts.

>>> claim("the kernel weight at half the superpixels is 0.25", 0.2500, equals=0.25, tol=0.005)
✓ the kernel weight at half the superpixels is 0.25 (measured 0.25)
>>> claim("Sobel's LeRF beats CAM's", 0.73 > 0.62)
✓ Sobel's LeRF beats CAM's
>>> claim("every null baseline fails the randomisation test", rho, below=0.5)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from numbers import Real

__all__ = ["claim", "ClaimError"]


class ClaimError(AssertionError):
    """A lesson's claim about its own outputs no longer holds."""


def _number(value) -> float:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ClaimError(f"claim() compares numbers, got {type(value).__name__}")
    return float(value)


def _show(value: float) -> str:
    # Below 1e-4 a measured value is rounding noise (a residual, a gap), and its digits move with the
    # number of CPU threads: print its size, not its digits, so the lesson's output is the same everywhere.
    if value != 0 and abs(value) < 1e-4:
        return "below 1e-4 in size"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def claim(statement: str, value=None, *, equals=None, tol=None, below=None, above=None, at_most=None,
          at_least=None) -> None:
    """Print ``statement`` as checked, or raise :class:`ClaimError` if ``value`` contradicts it.

    ``value`` alone must be truthy (a comparison already made: ``claim("A beats B", a > b)``);
    otherwise ``equals`` (with ``tol``, default 0.5 in the last printed digit of ``equals``),
    ``below``/``above`` (strict) and ``at_most``/``at_least`` bound it. Returns None, so a claim
    on a cell's last line displays nothing, however the notebook is run (nbval ignores a trailing ``;``).
    """
    bounds = {"equals": equals, "below": below, "above": above, "at_most": at_most, "at_least": at_least}
    given = {k: v for k, v in bounds.items() if v is not None}
    if not given:
        if not bool(value):
            raise ClaimError(f"✗ the lesson claims that {statement}, but its output says otherwise")
        print(f"✓ {statement}")
        return None
    v = _number(value)
    failures = []
    if equals is not None:
        target = _number(equals)
        if tol is None:
            text = repr(float(equals)).rstrip("0")
            decimals = len(text.split(".")[1]) if "." in text else 0
            tol = 0.5 * 10 ** (-decimals)
        if not math.isclose(v, target, rel_tol=0.0, abs_tol=tol):
            failures.append(f"equal to {_show(target)} (within {tol:g})")
    if below is not None and not v < _number(below):
        failures.append(f"below {_show(_number(below))}")
    if above is not None and not v > _number(above):
        failures.append(f"above {_show(_number(above))}")
    if at_most is not None and not v <= _number(at_most):
        failures.append(f"at most {_show(_number(at_most))}")
    if at_least is not None and not v >= _number(at_least):
        failures.append(f"at least {_show(_number(at_least))}")
    if failures or math.isnan(v):
        raise ClaimError(f"✗ the lesson claims that {statement}, but the value is {_show(v)}, not "
                         f"{' and '.join(failures) or 'a number'}")
    print(f"✓ {statement} (measured {_show(v)})")
    return None
