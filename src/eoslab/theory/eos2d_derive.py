"""Derivation of :data:`eoslab.theory.eos2d.SLOW_MANIFOLD` (maintainer tool; needs sympy, which
is not an eoslab dependency: ``pip install sympy``).

    python -m eoslab.theory.eos2d_derive --weight 10      # ~2 min; prints the table

Solves the invariance equation of the slow manifold ℓ = 2 + H(x) of the one-step map of the
2-D model in scaled variables (x = ηz, ℓ = ηλ, e = ηE),

    H(x'(x, H(x))) = ℓ'(x, H(x)) − 2,     H = Σ c_ij(e) εⁱ xʲ,

order by order in the weight w = 2i + j (x ~ t, ε ~ t²), in exact rational arithmetic. Odd-j
coefficients are fixed at their own weight, even-j ones (the limit c_i0 among them) two weights
later, so ``--weight W`` solves the equations up to W + 2 and prints every coefficient of weight
≤ W + 1 (all of them are determined). The tests check the shipped table without sympy.
"""

from __future__ import annotations

import argparse
import sys


def derive(weight: int, with_e: bool = True) -> dict:
    """{(i, j): sympy expression in e} for every coefficient of weight ≤ weight + 1."""
    import sympy as sp
    from sympy.polys.domains import QQ
    from sympy.polys.rings import ring

    N = weight + 2
    keys = [(i, w - 2 * i) for w in range(1, N + 1) for i in range(0, w // 2 + 1)]
    R, *gens = ring(",".join(["t", "x", "eps", "e"] + [f"c_{i}_{j}" for i, j in keys]), QQ)
    t, x, eps, e = gens[:4]
    C = dict(zip(keys, gens[4:]))
    if not with_e:
        e = R(0)
    trunc = lambda p: R({m: c for m, c in p.items() if m[0] <= N})  # drop weights > N
    xs, es = t * x, t**2 * eps
    u = sum((C[k] * es ** k[0] * xs ** k[1] for k in keys), R(0))
    l = 2 + u
    f = xs + e
    c1 = (1 - es) * l + 2 * es * f
    c2 = (1 - es + es**2) * l + 2 * es * (1 - es) * f
    xp = trunc(xs - l * xs + QQ(1, 2) * xs**2 * c1)
    up = trunc(u - 2 * xs * c1 + xs**2 * c2)
    powers = [R(1)]
    for _ in range(N):
        powers.append(trunc(powers[-1] * xp))
    residual = sum((trunc(C[(i, j)] * es**i * powers[j]) for i, j in keys), R(0)) - up

    expr = residual.as_expr()
    sym = {s.name: s for s in expr.free_symbols}
    T, X, EPS = sym["t"], sym["x"], sym["eps"]
    poly = sp.Poly(expr, T)
    sol: dict = {}
    for w in range(1, N + 1):
        eq_w = sp.expand(poly.coeff_monomial(T**w).subs(sol))
        if eq_w == 0:
            continue
        eqs = [q for q in sp.Poly(eq_w, X, EPS).coeffs() if q != 0]
        unknowns = sorted({s for q in eqs for s in q.free_symbols if s.name.startswith("c_")}, key=str)
        found = sp.solve(eqs, unknowns, dict=True)
        if not found:
            raise RuntimeError(f"no solution at weight {w}")
        # weights 1-2 are quadratic; the other root is inconsistent at the next weight
        sol.update(found[0])
        sol = {k: sp.factor(sp.sympify(v).subs(sol)) for k, v in sol.items()}
    out = {}
    for s, v in sol.items():
        i, j = map(int, s.name.split("_")[1:])
        if 2 * i + j <= weight + 1 and not (v.free_symbols - ({sp.Symbol("e")} if with_e else set())):
            out[(i, j)] = v
    return out


def as_table(coeffs: dict) -> str:
    """The coefficients in the format of :data:`eoslab.theory.eos2d.SLOW_MANIFOLD`."""
    import sympy as sp

    e = sp.Symbol("e")
    rows = []
    for (i, j), v in coeffs.items():
        num, den = sp.fraction(sp.together(sp.expand(v.subs(sp.Symbol("e"), e))))
        p = sp.Poly(num, e)
        rows.append((2 * i + j, i, j, int(den), tuple(int(p.coeff_monomial(e**k)) for k in range(p.degree() + 1))))
    return "\n".join(f"    ({i}, {j}): ({den}, {cs})," for _, i, j, den, cs in sorted(rows))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Derive the slow-manifold coefficients of the 2-D model.")
    ap.add_argument("--weight", type=int, default=10, help="solve to this weight + 2 (default 10: ε⁵)")
    ap.add_argument("--no-e", action="store_true", help="E = 0 only (faster)")
    a = ap.parse_args(argv)
    try:
        import sympy  # noqa: F401
    except ImportError:
        sys.exit("this tool needs sympy: pip install sympy")
    print(as_table(derive(a.weight, not a.no_e)))


if __name__ == "__main__":
    main()
