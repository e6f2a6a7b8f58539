//! The standard normal distribution and the complementary error function, accurate to a few ulps
//! over the whole real line, including the far tails and their logarithms.
//!
//! `erfcx(x) = exp(x²)·erfc(x)` is the primitive: for `x ≥ 0` the smooth function
//! `(1 + 2x)·erfcx(x)` is expanded in a Chebyshev series of `Y = (x − K)/(x + K)`, `K = 3.75`, which
//! maps `[0, ∞)` onto `[−1, 1)` (the change of variable of Shepherd & Laframboise, 1981). The
//! coefficients were computed for this crate with 60-digit arithmetic by
//! `crates/privacy/tools/erfcx_coeffs.py`; the truncation error is below 3e-18.

/// Chebyshev coefficients of `(1 + 2x)·erfcx(x)` in `Y = (x − 3.75)/(x + 3.75)` (printed with 20
/// significant digits by the generator; the compiler rounds them to the nearest f64).
#[allow(clippy::excessive_precision)]
const ERFCX_CHEB: [f64; 27] = [
    1.177_578_934_567_401_754_1,
    -0.004_590_054_580_646_477_330_9,
    -0.084_249_133_366_517_915_584,
    0.059_209_939_998_191_890_498,
    -0.026_658_668_435_305_752_277,
    0.009_074_997_670_705_265_093_9,
    -0.002_413_163_540_417_608_190_9,
    0.000_490_775_836_525_808_632_29,
    -0.000_069_169_733_025_012_063_671,
    0.000_004_139_027_986_073_010_167_5,
    0.000_000_774_038_306_619_849_066_86,
    -0.000_000_218_864_010_492_343_956_61,
    0.000_000_010_764_999_465_670_910_377,
    0.000_000_004_521_959_811_218_286_897_9,
    -0.000_000_000_775_440_020_883_135_110_65,
    -0.000_000_000_063_180_883_408_866_844_944,
    0.000_000_000_028_687_950_109_306_698_981,
    0.000_000_000_000_194_558_685_457_773_472_3,
    -0.000_000_000_000_965_469_674_843_343_890_59,
    0.000_000_000_000_032_525_481_481_487_398_415,
    0.000_000_000_000_033_478_119_482_868_053_878,
    -0.000_000_000_000_001_864_562_880_419_313_101_5,
    -0.000_000_000_000_001_250_795_053_068_864_708_5,
    0.000_000_000_000_000_074_182_352_566_240_434_63,
    0.000_000_000_000_000_050_681_489_047_961_113_168,
    -0.000_000_000_000_000_002_237_056_659_435_999_597_4,
    -0.000_000_000_000_000_002_187_342_944_303_017_665,
];

const K: f64 = 3.75;
const FRAC_1_SQRT_PI: f64 = 0.5 * std::f64::consts::FRAC_2_SQRT_PI;

/// The scaled complementary error function `exp(x²)·erfc(x)`.
///
/// Relative error about 1e-15 for `x ≥ 0`; for `x < 0` it is `2·exp(x²) − erfcx(−x)`, which
/// overflows to `+∞` below about −26.6. Returns NaN for NaN.
pub fn erfcx(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 * (x * x).exp() - erfcx(-x);
    }
    if x > 1e8 {
        // Asymptotically 1/(√π x) (1 − 1/(2x²) + …); the correction is below 1e-16 here.
        return FRAC_1_SQRT_PI / x;
    }
    let y = (x - K) / (x + K);
    // Clenshaw recurrence for Σ c_n T_n(y).
    let (mut b1, mut b2) = (0.0_f64, 0.0_f64);
    for &c in ERFCX_CHEB.iter().skip(1).rev() {
        let b0 = 2.0 * y * b1 - b2 + c;
        b2 = b1;
        b1 = b0;
    }
    let g = y * b1 - b2 + ERFCX_CHEB[0];
    g / (1.0 + 2.0 * x)
}

/// The complementary error function `erfc(x) = 1 − erf(x)`, with small relative error also in the
/// far right tail (it underflows to 0 only beyond x ≈ 26.5).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x >= 0.0 {
        if x > 27.3 {
            return 0.0;
        }
        (-x * x).exp() * erfcx(x)
    } else {
        2.0 - erfc(-x)
    }
}

/// The natural logarithm of `erfc(x)`, finite for every finite `x` (no underflow in the tail).
pub fn ln_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    if x >= 0.0 {
        -x * x + erfcx(x).ln()
    } else {
        erfc(x).ln()
    }
}

/// The standard normal distribution function Φ(x) = P(Z ≤ x).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// The standard normal survival function 1 − Φ(x) = Φ(−x), accurate in the right tail.
pub fn norm_sf(x: f64) -> f64 {
    0.5 * erfc(x * std::f64::consts::FRAC_1_SQRT_2)
}

/// ln Φ(x), accurate in the far left tail (no underflow).
pub fn ln_norm_cdf(x: f64) -> f64 {
    std::f64::consts::LN_2.mul_add(-1.0, ln_erfc(-x * std::f64::consts::FRAC_1_SQRT_2))
}

/// ln(1 − Φ(x)) = ln Φ(−x), accurate in the far right tail.
pub fn ln_norm_sf(x: f64) -> f64 {
    ln_norm_cdf(-x)
}

/// The quantile z with Φ(z) = p for p in (0, 1), by bisection on the accurate Φ refined with
/// Newton steps (used only to choose truncation points, never for a guarantee directly).
pub fn norm_quantile(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    // Work with the smaller tail to keep relative precision.
    let (tail, sign) = if p < 0.5 { (p, -1.0) } else { (1.0 - p, 1.0) };
    let ln_tail = tail.ln();
    // Bisection for z ≥ 0 with ln Φ(−z) = ln_tail.
    let (mut lo, mut hi) = (0.0_f64, 40.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ln_norm_cdf(-mid) > ln_tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-15 * hi.max(1.0) {
            break;
        }
    }
    sign * 0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    #[test]
    #[allow(clippy::excessive_precision)]
    fn erfc_known_values() {
        // Reference values computed with mpmath at 40 digits.
        let cases = [
            (0.0, 1.0),
            (0.1, 0.887_537_083_981_715_1),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (2.0, 0.004_677_734_981_047_265_8),
            (3.0, 2.209_049_699_858_544e-5),
            (5.0, 1.537_459_794_428_034_8e-12),
            (10.0, 2.088_487_583_762_544_8e-45),
            (20.0, 5.395_865_611_607_901e-176),
            (-1.0, 1.842_700_792_949_715),
            (-3.0, 1.999_977_909_503_001_4),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(rel(got, want) < 5e-15, "erfc({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn ln_erfc_far_tail() {
        // ln erfc(30) = −900 − ln(30√π) − 1/1800 + … (mpmath: -903.9741171106438...)
        let got = ln_erfc(30.0);
        assert!((got - (-903.974_117_110_643_9)).abs() < 1e-10, "{got}");
        let got = ln_norm_cdf(-40.0);
        // mpmath: log(ncdf(-40)) = -804.6084420137538
        assert!((got - (-804.608_442_013_753_8)).abs() < 1e-9, "{got}");
    }

    #[test]
    fn normal_cdf_symmetry_and_values() {
        for i in -80..=80 {
            let x = f64::from(i) * 0.1;
            let s = norm_cdf(x) + norm_cdf(-x);
            assert!((s - 1.0).abs() < 1e-15, "x={x}");
            assert_eq!(norm_sf(x), norm_cdf(-x));
        }
        // Φ(1.959963984540054) = 0.975
        assert!((norm_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-15);
        assert!((norm_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
        assert!((norm_quantile(1e-20) - (-9.262_340_089_798_408)).abs() < 1e-9);
    }

    #[test]
    fn erfcx_matches_erfc_and_asymptote() {
        for i in 0..200 {
            let x = f64::from(i) * 0.13;
            let direct = (x * x).exp() * erfc(x);
            if direct.is_finite() && x < 20.0 {
                assert!(rel(erfcx(x), direct) < 1e-13, "x={x}");
            }
        }
        let x = 1e6;
        assert!(rel(erfcx(x), FRAC_1_SQRT_PI / x * (1.0 - 0.5 / (x * x))) < 1e-15);
    }
}
