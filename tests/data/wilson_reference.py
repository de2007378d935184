"""Reference Wilson 95% intervals for tests/dashboard_api.rs, computed from the definition
(Wilson 1927; E. B. Wilson, "Probable inference, the law of succession, and statistical
inference") with the quantile from Python's standard library, independently of the Rust
code. Run: python3 tests/data/wilson_reference.py"""
import math
from statistics import NormalDist

z = NormalDist().inv_cdf(0.975)


def wilson(x, n):
    p = x / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


for x, n in [(0, 10), (5, 10), (10, 10), (1, 40), (13, 40), (81, 263), (199, 1000)]:
    lo, hi = wilson(x, n)
    print(f"({x}, {n}, {lo:.10f}, {hi:.10f}),")
