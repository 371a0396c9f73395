//! Generation settings and share links. A link's fragment (never sent to a server) carries the
//! question, the settings and the model id: `#q=…&t=0&p=1&n=128&s=0&m=law-tiny-demo`. Values that
//! are missing keep the model's defaults; values out of range or garbage fall back to the
//! defaults with a notice for the user.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub seed: u64,
}

pub const MAX_TEMPERATURE: f32 = 2.0;
pub const MAX_NEW_TOKENS: usize = 512;
pub const MAX_QUESTION_CHARS: usize = 2000;

impl Settings {
    pub fn from_manifest(g: &shared::manifest::GenerationDefaults) -> Self {
        Self {
            temperature: g.temperature.clamp(0.0, MAX_TEMPERATURE),
            top_p: g.top_p,
            max_new_tokens: g.max_new_tokens.clamp(1, MAX_NEW_TOKENS),
            seed: g.seed,
        }
    }
}

/// Everything a share link holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Shared {
    pub question: String,
    pub settings: Settings,
    pub model: String,
}

/// The model a link without `m` opens: the bundled demo package.
pub const DEFAULT_MODEL: &str = "law-tiny-demo";

impl Shared {
    /// What a link without any value gives: no question, greedy, 128 tokens, seed 0, the demo.
    pub fn defaults() -> Self {
        Self {
            question: String::new(),
            settings: Settings {
                temperature: 0.0,
                top_p: 1.0,
                max_new_tokens: 128,
                seed: 0,
            },
            model: DEFAULT_MODEL.into(),
        }
    }
}

/// A parsed link: the state to show and what had to fall back (in Korean, for the page).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub shared: Shared,
    pub notices: Vec<String>,
    /// Whether the link set any of `t`, `p`, `n`, `s` (if not, the model's own defaults apply).
    pub has_settings: bool,
}

/// Percent-encode everything but unreserved characters (UTF-8 bytes).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Undo [`encode`] (`+` also reads as a space); `None` for bad escapes or invalid UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The fragment (without `#`) for `shared`.
pub fn to_fragment(shared: &Shared) -> String {
    let s = &shared.settings;
    format!(
        "q={}&t={}&p={}&n={}&s={}&m={}",
        encode(&shared.question),
        s.temperature,
        s.top_p,
        s.max_new_tokens,
        s.seed,
        encode(&shared.model)
    )
}

/// Read a fragment (with or without `#`) over `defaults`.
pub fn parse_fragment(fragment: &str, defaults: &Shared) -> Parsed {
    let mut shared = defaults.clone();
    let mut notices = Vec::new();
    let mut has_settings = false;
    let mut bad = |what: &str, raw: &str, default: String| {
        let shown: String = raw.chars().take(40).collect();
        notices.push(format!(
            "링크의 {what} 값 “{shown}”이(가) 올바르지 않아 기본값 {default}을(를) 사용합니다."
        ));
    };
    for pair in fragment.trim_start_matches('#').split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        has_settings |= matches!(key, "t" | "p" | "n" | "s");
        let value = decode(raw);
        let text = value.clone().unwrap_or_default();
        let d = &defaults.settings;
        match key {
            "q" => match value {
                Some(q) if q.chars().count() <= MAX_QUESTION_CHARS => shared.question = q,
                _ => bad("질문(q)", raw, "(빈 질문)".into()),
            },
            "t" => match text.parse::<f32>() {
                Ok(t) if t.is_finite() && (0.0..=MAX_TEMPERATURE).contains(&t) => {
                    shared.settings.temperature = t
                }
                _ => bad("temperature(t)", raw, d.temperature.to_string()),
            },
            "p" => match text.parse::<f32>() {
                Ok(p) if p > 0.0 && p <= 1.0 => shared.settings.top_p = p,
                _ => bad("top-p(p)", raw, d.top_p.to_string()),
            },
            "n" => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_NEW_TOKENS).contains(&n) => shared.settings.max_new_tokens = n,
                _ => bad("최대 토큰 수(n)", raw, d.max_new_tokens.to_string()),
            },
            "s" => match text.parse::<u64>() {
                Ok(s) => shared.settings.seed = s,
                _ => bad("시드(s)", raw, d.seed.to_string()),
            },
            "m" => match value {
                Some(m) if shared::manifest::valid_model_id(&m) => shared.model = m,
                _ => bad("모델(m)", raw, defaults.model.clone()),
            },
            _ => bad("알 수 없는 항목", key, "(무시)".into()),
        }
    }
    Parsed {
        shared,
        notices,
        has_settings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Shared {
        Shared::defaults()
    }

    #[test]
    fn a_link_round_trips() {
        let s = Shared {
            question: "헌법 제10조는? a+b & c=d #x %".into(),
            settings: Settings {
                temperature: 0.7,
                top_p: 0.9,
                max_new_tokens: 64,
                seed: 42,
            },
            model: "my-model.v2".into(),
        };
        let frag = to_fragment(&s);
        assert!(!frag.contains(' ') && !frag.contains('#') && !frag.contains("헌"));
        let p = parse_fragment(&format!("#{frag}"), &defaults());
        assert_eq!(p.shared, s);
        assert!(p.notices.is_empty());
    }

    #[test]
    fn garbage_falls_back_to_defaults_with_notices() {
        let p = parse_fragment(
            "#q=%E0%A4&t=NaN&p=0&n=99999&s=-1&m=..%2Fevil&zz=1&t=inf",
            &defaults(),
        );
        assert_eq!(p.shared, defaults());
        assert_eq!(p.notices.len(), 8, "{:?}", p.notices);
        let p = parse_fragment("#q=%ED%97%8C%EB%B2%95&n=7", &defaults());
        assert_eq!(p.shared.question, "헌법");
        assert_eq!(p.shared.settings.max_new_tokens, 7);
        assert!(p.notices.is_empty() && p.has_settings);
        let empty = parse_fragment("", &defaults());
        assert_eq!(empty.shared, defaults());
        assert!(!empty.has_settings && !parse_fragment("#q=x&m=a", &defaults()).has_settings);
    }
}
