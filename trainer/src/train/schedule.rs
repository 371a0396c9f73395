//! Learning-rate schedules as HF's `get_scheduler` defines them: linear warmup over
//! `ceil(warmup_ratio · total)` steps, then cosine to 0, linear to 0, or constant.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    pub kind: Schedule,
    pub peak: f64,
    pub warmup: usize,
    pub total: usize,
}

impl LrSchedule {
    pub fn new(kind: Schedule, peak: f64, warmup_ratio: f64, total: usize) -> Self {
        let warmup = (warmup_ratio * total as f64).ceil() as usize;
        Self {
            kind,
            peak,
            warmup,
            total,
        }
    }

    /// Learning rate of optimizer step `step` (0-based), as HF's LambdaLR gives it.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * step as f64 / self.warmup.max(1) as f64;
        }
        let rest = (self.total - self.warmup.min(self.total)).max(1) as f64;
        let progress = (step - self.warmup) as f64 / rest;
        let factor = match self.kind {
            Schedule::Constant => 1.0,
            Schedule::Linear => (1.0 - progress).max(0.0),
            Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        };
        self.peak * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hf_lambdas() {
        // get_cosine_schedule_with_warmup(num_warmup_steps=3, num_training_steps=10), lr 1.
        let s = LrSchedule::new(Schedule::Cosine, 1.0, 0.25, 10);
        assert_eq!(s.warmup, 3);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(2) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.lr(3), 1.0);
        // step 6: progress 3/7 → 0.5·(1 + cos(3π/7)) = 0.6112604669781572
        assert!((s.lr(6) - 0.611_260_466_978_157_2).abs() < 1e-12);
        let l = LrSchedule::new(Schedule::Linear, 1.0, 0.0, 10);
        assert!((l.lr(4) - 0.6).abs() < 1e-12);
        assert_eq!(
            LrSchedule::new(Schedule::Constant, 2e-4, 0.0, 5).lr(4),
            2e-4
        );
    }
}
