//! Training progress for people: a bar on a terminal (step, loss, ε spent, examples/s, ETA), or,
//! when stderr is not a terminal (a CI log, `nohup`, a notebook), one line per tenth of the run
//! and at least every 30 s with step, epoch, examples/s (expected, from B = q·n), ETA and ε
//! spent. The log lines carry no value computed from private examples without noise (no loss,
//! no realised batch size), so a log may be shared. Under [`crate::output::capture`] with a
//! hook (the Python package's callback), the same values go to the hook at every step instead.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use dpselft_dp::{EvalMetrics, Observer, StepMetrics, TrainPlan};

use crate::output::{self, ProgressEvent};

/// At most this long between two log lines.
const LOG_INTERVAL: Duration = Duration::from_secs(30);

/// ε as printed: four decimals, or ∞ for a non-private run.
pub(crate) fn fmt_eps(e: Option<f64>) -> String {
    e.map_or("∞".into(), |e| format!("{e:.4}"))
}

/// The observer of a training run (see the module documentation).
#[derive(Default)]
pub(crate) struct Bar {
    bar: Option<indicatif::ProgressBar>,
    log: Option<LogLines>,
    /// Progress goes to [`output::progress`], nothing is printed.
    hooked: bool,
}

/// The state of the log lines.
struct LogLines {
    total: u64,
    /// The expected batch size B = q·n: throughput from it is data-independent, unlike the
    /// realised (Poisson) batch sizes.
    expected_batch: f64,
    every: u64,
    first_step: u64,
    started: Instant,
    last: Instant,
}

impl Bar {
    /// Clears the bar (log lines need nothing).
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn start_bar(&mut self, plan: &TrainPlan, resumed_at: u64) {
        let bar = indicatif::ProgressBar::new(plan.total_steps);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        ) {
            bar.set_style(style);
        }
        bar.set_position(resumed_at);
        bar.reset_eta();
        self.bar = Some(bar);
    }

    fn start_log(&mut self, plan: &TrainPlan, resumed_at: u64) {
        let from = if resumed_at > 0 {
            format!(", resuming at step {resumed_at}")
        } else {
            String::new()
        };
        eprintln!(
            "training: {} steps (q = {:.5}, σ = {:.4}){from}",
            plan.total_steps, plan.sampling_rate, plan.noise_multiplier
        );
        self.log = Some(LogLines::new(plan, resumed_at));
    }
}

impl LogLines {
    fn new(plan: &TrainPlan, resumed_at: u64) -> Self {
        let now = Instant::now();
        Self {
            total: plan.total_steps,
            expected_batch: plan.expected_batch_size,
            every: (plan.total_steps / 10).max(1),
            first_step: resumed_at,
            started: now,
            last: now,
        }
    }

    /// Where the run stands after step `m`.
    fn event(&self, m: &StepMetrics) -> ProgressEvent {
        let done = m.step.saturating_sub(self.first_step).max(1) as f64;
        let per_step = self.started.elapsed().as_secs_f64().max(1e-9) / done;
        ProgressEvent {
            step: m.step,
            total_steps: self.total,
            epoch: m.epoch,
            examples_per_s: self.expected_batch / per_step,
            eta_s: per_step * self.total.saturating_sub(m.step) as f64,
            epsilon: m.epsilon,
        }
    }

    /// The line for step `m`, if one is due.
    fn line(&mut self, m: &StepMetrics) -> Option<String> {
        let due = m.step.is_multiple_of(self.every)
            || m.step == self.total
            || self.last.elapsed() >= LOG_INTERVAL;
        if !due {
            return None;
        }
        self.last = Instant::now();
        let e = self.event(m);
        Some(format!(
            "step {}/{}  epoch {:.2}  {:.1} ex/s  ETA {:.0} s  ε {}",
            e.step,
            e.total_steps,
            e.epoch,
            e.examples_per_s,
            e.eta_s,
            fmt_eps(e.epsilon)
        ))
    }
}

impl Observer for Bar {
    fn started(&mut self, plan: &TrainPlan, resumed_at: u64) {
        self.hooked = output::has_progress_hook();
        if self.hooked {
            self.log = Some(LogLines::new(plan, resumed_at));
        } else if std::io::stderr().is_terminal() {
            self.start_bar(plan, resumed_at);
        } else {
            self.start_log(plan, resumed_at);
        }
    }

    fn step(&mut self, m: &StepMetrics) {
        if let Some(b) = &self.bar {
            // The operator's own terminal: the (unprivatised) loss helps and is not kept.
            let loss = m.loss.map_or("-".into(), |l| format!("{l:.4}"));
            b.set_message(format!(
                "loss {loss}  ε {}  {:.1} ex/s",
                fmt_eps(m.epsilon),
                m.examples_per_s
            ));
            b.set_position(m.step);
        }
        match self.log.as_mut() {
            Some(log) if self.hooked => output::progress(&log.event(m)),
            Some(log) => {
                if let Some(line) = log.line(m) {
                    eprintln!("{line}");
                }
            }
            None => {}
        }
    }

    fn evaluated(&mut self, step: u64, m: &EvalMetrics) {
        if self.hooked {
            return;
        }
        let mut line = format!("step {step}: eval loss {:.4}", m.loss);
        if let Some(a) = m.accuracy {
            line += &format!(", accuracy {a:.4}");
        }
        if let Some(f) = m.macro_f1 {
            line += &format!(", macro-F1 {f:.4}");
        }
        if let Some(p) = m.perplexity {
            line += &format!(", perplexity {p:.4}");
        }
        match &self.bar {
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}
