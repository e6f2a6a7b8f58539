"""Generates the Chebyshev coefficients used by `normal::erfcx` (crates/privacy/src/normal.rs).

g(Y) = (1 + 2x) * erfcx(x), with Y = (x - K) / (x + K), K = 3.75, maps x in [0, inf) to
Y in [-1, 1) (the idea of Shepherd & Laframboise 1981). The series is computed here with mpmath at
60 digits by Chebyshev interpolation; run `python3 erfcx_coeffs.py` and paste the output.
"""
import mpmath as mp

mp.mp.dps = 60
K = mp.mpf("3.75")
N = 48


def g(y):
    if y >= 1:
        return 2 / mp.sqrt(mp.pi)  # limit x -> inf: (1+2x) / (sqrt(pi) x) -> 2/sqrt(pi)
    x = K * (1 + y) / (1 - y)
    return (1 + 2 * x) * mp.exp(x * x) * mp.erfc(x)


M = 200
nodes = [mp.cos(mp.pi * (k + mp.mpf(1) / 2) / M) for k in range(M)]
vals = [g(y) for y in nodes]
coef = []
for j in range(N):
    s = mp.fsum(vals[k] * mp.cos(mp.pi * j * (k + mp.mpf(1) / 2) / M) for k in range(M))
    c = 2 * s / M
    if j == 0:
        c /= 2
    coef.append(c)

# Drop trailing coefficients below 1e-18.
while abs(coef[-1]) < mp.mpf("1e-18"):
    coef.pop()
print(f"// {len(coef)} coefficients, K = 3.75")
for c in coef:
    print(f"    {mp.nstr(c, 20, min_fixed=-30, max_fixed=30)},")
