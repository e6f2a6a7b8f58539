//! Does a device compute what the CPU computes? (`dpselft bench device --device cuda:N`)
//!
//! For the built-in random models (`tiny` BERT, `tiny-llama`) and several trainable sets, the
//! same row is set up twice, once on the CPU and once on the device, from the same host-seeded
//! weights, batch and noise stream ([`StepBench`]). Compared, each as a relative difference
//! against the CPU's values:
//!
//! - the **per-example gradient norms** (per example, |a − b| / a);
//! - the **clipped sums** Σᵢ cᵢ gᵢ (all parameters together, ‖a − b‖∞ / ‖a‖∞);
//! - the **update of three DP steps** (clip, noise, AdamW; Δ = parameters after − before,
//!   ‖Δa − Δb‖∞ / ‖Δa‖∞): the seeded tiny run, which draws identical noise on both because the
//!   noise comes from the host's ChaCha20 stream.
//!
//! On the CPU (`--device cpu`) the two copies run the same code and must agree exactly: that
//! checks the harness, not a GPU.

use candle_core::{Device, Tensor};
use dpselft_model::{DeviceSpec, TrainableSpec};
use dpselft_selft::{Result, SelftError};
use serde::{Deserialize, Serialize};

use crate::step_cost::{Kind, StepBench, StepShape, tiny_model};

/// Per-example norms and clipped sums: float rounding of a few reductions.
pub const CLIP_TOLERANCE: f64 = 1e-4;
/// Three AdamW updates, Δ = p_after − p_before: Δ is a few learning rates, p is O(1), so one
/// rounding of p more or less is ~1e-4 of Δ. The CPU's fused update (one rounding, in f64) and
/// the composite that runs on a GPU (two, in f32) differ by 6e-4 of Δ on the CPU alone.
pub const UPDATE_TOLERANCE: f64 = 1e-3;
/// Steps of the seeded run.
pub const STEPS: usize = 3;

/// The rows compared: (model, trainable set).
const ROWS: &[(&str, &str)] = &[
    ("tiny", "head,last:1"),
    ("tiny", "all"),
    ("tiny", "lora;head"),
    ("tiny-llama", "head,last:1"),
    ("tiny-llama", "all"),
];

const SHAPE: StepShape = StepShape {
    batch: 8,
    seq_len: 16,
};

/// One quantity of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityRow {
    /// `tiny` or `tiny-llama`.
    pub model: String,
    /// The trainable set.
    pub trainable: String,
    /// `per-example norms`, `clipped sums` or `update of 3 DP steps`.
    pub quantity: String,
    /// The largest relative difference (see the module documentation).
    pub max_rel_diff: f64,
    /// The tolerance it is held to.
    pub tolerance: f64,
    /// `max_rel_diff <= tolerance`.
    pub pass: bool,
}

/// `bench device`'s result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityReport {
    /// The device compared with the CPU.
    pub device: DeviceSpec,
    /// Every comparison.
    pub rows: Vec<ParityRow>,
    /// Every row passed.
    pub pass: bool,
}

/// Compares `device` with the CPU on every row.
pub fn device_parity(device: DeviceSpec) -> Result<ParityReport> {
    let on_device = device.open()?;
    let mut rows = Vec::new();
    for &(model, spec) in ROWS {
        rows.extend(compare_row(model, spec, &on_device)?);
    }
    let pass = rows.iter().all(|r| r.pass);
    Ok(ParityReport { device, rows, pass })
}

/// The three comparisons of one (model, trainable set).
fn compare_row(model: &str, spec: &str, device: &Device) -> Result<Vec<ParityRow>> {
    let trainable = TrainableSpec::parse(spec)?;
    let mut cpu = StepBench::new(&tiny_model(model, &Device::Cpu)?, &trainable, SHAPE)?;
    let mut dev = StepBench::new(&tiny_model(model, device)?, &trainable, SHAPE)?;
    let (a, b) = (cpu.clip_output()?, dev.clip_output()?);
    let norms = max_elementwise_rel_diff(&a.norms, &b.norms);
    // Over all parameters at once, as the update below: a parameter whose gradient is zero in
    // exact arithmetic (the attention's key bias: softmax ignores a shift shared by a query's
    // scores) holds only rounding noise, which no two devices compute alike.
    let sums = max_abs_rel_diff(&concat(&a.sums)?, &concat(&b.sums)?);
    let update = |s: &mut StepBench| -> Result<Vec<f32>> {
        let before = s.trainable_values()?;
        for _ in 0..STEPS {
            s.step(Kind::Dp)?;
        }
        let after = s.trainable_values()?;
        Ok(after.iter().zip(&before).map(|(a, b)| a - b).collect())
    };
    let update = max_abs_rel_diff(&update(&mut cpu)?, &update(&mut dev)?);
    let row = |quantity: String, max_rel_diff: f64, tolerance: f64| ParityRow {
        model: model.into(),
        trainable: spec.into(),
        quantity,
        max_rel_diff,
        tolerance,
        pass: max_rel_diff <= tolerance,
    };
    Ok(vec![
        row("per-example norms".into(), norms, CLIP_TOLERANCE),
        row("clipped sums".into(), sums, CLIP_TOLERANCE),
        row(
            format!("update of {STEPS} DP steps"),
            update,
            UPDATE_TOLERANCE,
        ),
    ])
}

/// Every element of `tensors`, in order, on the host.
fn concat(tensors: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// max_i |a_i − b_i| / |a_i| (for positive quantities such as norms; NaN anywhere: ∞).
pub fn max_elementwise_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs() / x.abs().max(f64::MIN_POSITIVE);
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

/// ‖a − b‖∞ / ‖a‖∞ (0 when both are zero; a length mismatch or a NaN: ∞).
pub fn max_abs_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let mut diff: f64 = 0.0;
    let mut scale: f64 = 0.0;
    for (&x, &y) in a.iter().zip(b) {
        let d = (x as f64 - y as f64).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        diff = diff.max(d);
        scale = scale.max((x as f64).abs());
    }
    if diff == 0.0 {
        0.0
    } else if scale == 0.0 {
        f64::INFINITY
    } else {
        diff / scale
    }
}

/// The report as a table for people.
pub fn table(report: &ParityReport) -> String {
    let mut out = format!(
        "{} against the CPU ({} DP steps for the update; tolerances: norms and sums {:e}, \
         update {:e})\n",
        report.device, STEPS, CLIP_TOLERANCE, UPDATE_TOLERANCE
    );
    out += &format!(
        "{:<11} {:<12} {:<22} {:>12}  result\n",
        "model", "trainable", "quantity", "max rel diff"
    );
    for r in &report.rows {
        out += &format!(
            "{:<11} {:<12} {:<22} {:>12.3e}  {}\n",
            r.model,
            r.trainable,
            r.quantity,
            r.max_rel_diff,
            if r.pass { "ok" } else { "FAIL" }
        );
    }
    out += if report.pass {
        "all equal within the tolerances\n"
    } else {
        "DIFFERENT: see the FAIL rows\n"
    };
    out
}

/// An error for a report that did not pass (the CLI exits non-zero with it).
pub fn check(report: &ParityReport) -> Result<()> {
    if report.pass {
        return Ok(());
    }
    let failed: Vec<String> = report
        .rows
        .iter()
        .filter(|r| !r.pass)
        .map(|r| {
            format!(
                "{} [{}] {}: {:.3e} > {:e}",
                r.model, r.trainable, r.quantity, r.max_rel_diff, r.tolerance
            )
        })
        .collect();
    Err(SelftError::Config(format!(
        "{} does not compute what the CPU computes: {}",
        report.device,
        failed.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences_are_against_the_cpu_values() {
        assert_eq!(max_abs_rel_diff(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
        assert!((max_abs_rel_diff(&[1.0, -2.0], &[1.0, -2.002]) - 1e-3).abs() < 1e-6);
        assert_eq!(max_abs_rel_diff(&[0.0], &[0.0]), 0.0);
        assert_eq!(max_abs_rel_diff(&[0.0], &[1e-9]), f64::INFINITY);
        assert_eq!(max_abs_rel_diff(&[1.0], &[f32::NAN]), f64::INFINITY);
        assert_eq!(max_abs_rel_diff(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert!((max_elementwise_rel_diff(&[2.0, 4.0], &[2.0, 4.004]) - 1e-3).abs() < 1e-12);
        assert_eq!(max_elementwise_rel_diff(&[1.0], &[f64::NAN]), f64::INFINITY);
    }

    #[test]
    fn the_cpu_agrees_with_itself_exactly() {
        let report = device_parity(DeviceSpec::Cpu).unwrap();
        assert_eq!(report.rows.len(), 3 * ROWS.len());
        for r in &report.rows {
            assert_eq!(r.max_rel_diff, 0.0, "{r:?}");
        }
        assert!(report.pass && check(&report).is_ok());
        assert!(table(&report).contains("all equal"));
    }

    #[test]
    fn a_failed_row_is_an_error_that_names_it() {
        let mut report = device_parity(DeviceSpec::Cpu).unwrap();
        report.rows[1].max_rel_diff = 0.5;
        report.rows[1].pass = false;
        report.pass = false;
        let e = check(&report).unwrap_err().to_string();
        assert!(e.contains("tiny [head,last:1] clipped sums"), "{e}");
        assert!(table(&report).contains("FAIL"));
    }
}
