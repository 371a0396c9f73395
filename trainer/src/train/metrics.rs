//! `metrics.jsonl` (one line per logged step) and a loss-curve SVG redrawn as the run goes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

pub struct MetricsLog {
    jsonl: PathBuf,
    svg: PathBuf,
    history: Vec<StepMetrics>,
}

impl MetricsLog {
    /// Open the log in `dir`, keeping the lines of steps up to `resume_step` (a resumed run
    /// continues the same file).
    pub fn open(dir: &Path, resume_step: usize) -> Result<Self> {
        let jsonl = dir.join("metrics.jsonl");
        let mut history = Vec::new();
        if resume_step > 0
            && let Ok(text) = std::fs::read_to_string(&jsonl)
        {
            history = text
                .lines()
                .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
                .filter(|m| m.step <= resume_step)
                .collect();
        }
        let mut f = std::fs::File::create(&jsonl)?;
        for m in &history {
            writeln!(f, "{}", serde_json::to_string(m)?)?;
        }
        Ok(Self {
            jsonl,
            svg: dir.join("loss.svg"),
            history,
        })
    }

    pub fn push(&mut self, m: StepMetrics) -> Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.jsonl)?;
        writeln!(f, "{}", serde_json::to_string(&m)?)?;
        self.history.push(m);
        std::fs::write(&self.svg, self.svg_text())?;
        Ok(())
    }

    pub fn history(&self) -> &[StepMetrics] {
        &self.history
    }

    fn svg_text(&self) -> String {
        let (w, h, pad) = (640.0, 360.0, 48.0);
        let train: Vec<(f64, f64)> = self
            .history
            .iter()
            .map(|m| (m.step as f64, m.loss))
            .collect();
        let eval: Vec<(f64, f64)> = self
            .history
            .iter()
            .filter_map(|m| m.eval_loss.map(|e| (m.step as f64, e)))
            .collect();
        let all = train.iter().chain(&eval);
        let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
        let (min_y, max_y) = all.fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (min_y, max_y) = if min_y < max_y {
            (min_y, max_y)
        } else {
            (min_y - 1.0, min_y + 1.0)
        };
        let sx = |x: f64| pad + x / max_x * (w - 2.0 * pad);
        let sy = |y: f64| h - pad - (y - min_y) / (max_y - min_y) * (h - 2.0 * pad);
        let line = |pts: &[(f64, f64)], color: &str| {
            let d: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            format!(
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                d.join(" ")
            )
        };
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="{t}">loss {max_y:.3}</text><text x="{pad}" y="{lb}">{min_y:.3}</text><text x="{r}" y="{lb}" text-anchor="end">step {max_x}</text>
{train}{eval}
<text x="{r}" y="{t}" text-anchor="end"><tspan fill="#1f77b4">train</tspan> <tspan fill="#d62728">eval</tspan></text>
</svg>
"##,
            b = h - pad,
            r = w - pad,
            t = pad - 8.0,
            lb = h - pad + 16.0,
            train = line(&train, "#1f77b4"),
            eval = line(&eval, "#d62728"),
        )
    }
}
