//! The browser app in real headless Chromium with WebGPU (SwiftShader): a share link answers
//! token for token as `trainer generate` does natively on the same package; a reload fetches no
//! weights again; no request carries the question; HTML in an answer shows as text; garbage in
//! a link falls back with a notice; a package changed on the server replaces the stale cached
//! copy; a bad manifest is a named error; the stop button stops; without WebGPU the app says so
//! and answers on the CPU.
//!
//! Needs the built site (`web/dist`, or `LAW_WEB_DIST`) and chromium + chromedriver. Without
//! them the test says so and passes, unless `LAW_BROWSER_TESTS=1` (set by `.ci/run`).

mod browser;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use browser::{Browser, StaticServer, WEBGPU_FLAGS};
use common::repo;
use serde_json::{Value, json};
use shared::generate::{GenerationConfig, generate};
use shared::package::Package;
use shared::sampling::SamplingConfig;
use shared::save::{NamedTensor, write_safetensors};

type B = burn::backend::Flex;

const QUESTION: &str = "헌법 제10조의 내용은 무엇인가요?";
const MAX_NEW: usize = 64;
const DONE: &str = r#"
const a = document.querySelector('[data-testid=answer]');
if (!a || (a.dataset.state !== 'done' && a.dataset.state !== 'error')) return null;
const err = document.querySelector('[data-testid=error]');
return {state: a.dataset.state, text: a.textContent, tokens: a.dataset.tokens,
  backend: a.dataset.backend, ttft_ms: a.dataset.ttftMs, tps: a.dataset.decodeTps,
  error: err ? err.textContent : null, elements_inside: a.querySelectorAll('*').length,
  notices: [...document.querySelectorAll('.notice')].map(n => n.textContent)};
"#;

/// `trainer generate`'s greedy answer on a package: (ids with the stop id, text).
fn native_answer(package: &Path, question: &str, max_new: usize) -> (Vec<u32>, String) {
    let args = trainer::cmd::generate::GenerateArgs {
        model: Some(package.to_path_buf()),
        adapter: None,
        prompt: question.into(),
        raw: false,
        template: Default::default(),
        max_new_tokens: max_new,
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
        device: "cpu".parse().unwrap(),
        stats: false,
        quant: trainer::cmd::quant_args::QuantArgs {
            quant: trainer::cmd::quant_args::QuantArg::None,
            no_double_quant: false,
        },
    };
    let text = trainer::cmd::generate::generate_to(&args, &mut std::io::sink()).unwrap();
    let p = Package::<B>::open_dir(package, &Default::default()).unwrap();
    let prompt = p.tokenizer.encode(&args.prompt_text()).unwrap();
    let cfg = GenerationConfig {
        max_new_tokens: max_new,
        sampling: SamplingConfig::default(),
        seed: 0,
        stop_ids: vec![p.tokenizer.eos_id()],
    };
    let (ids, _) = pollster::block_on(generate(
        &p.model,
        &prompt,
        &cfg,
        &Default::default(),
        async |_| std::ops::ControlFlow::Continue(()),
    ))
    .unwrap();
    (ids, text)
}

/// A 1-layer model whose greedy answer to any seed-template question is exactly `payload`:
/// every layer outputs zero, so the residual stream is the token embedding; token `i` of the
/// chain (prompt's last token, then the payload's tokens) is one-hot at dimension `i`, and the
/// output row of the next token reads that dimension. Exported as an f32 web package named
/// `name`. `looped`: after the payload it starts over instead of stopping (for the stop button).
fn echo_package(dir: &Path, name: &str, payload: &str, looped: bool) -> PathBuf {
    let tok_file = repo().join("public/models/law-tiny-demo/tokenizer.json");
    let tok = shared::Tokenizer::from_file(&tok_file, None).unwrap();
    let prompt = tok
        .encode(&shared::prompt::Template::Seed.prompt("x", ""))
        .unwrap();
    let mut chain = vec![*prompt.last().unwrap()];
    chain.extend(tok.encode(payload).unwrap());
    let mut uniq = chain.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(
        uniq.len(),
        chain.len(),
        "payload tokens must be distinct: {chain:?}"
    );
    assert_eq!(tok.decode(&chain[1..]).unwrap(), payload);
    let (v, h, f) = (4096usize, 64usize, 64usize);
    let mut embed = vec![0f32; v * h];
    let mut out = vec![0f32; v * h];
    for (i, &t) in chain.iter().enumerate() {
        embed[t as usize * h + i] = 1.0;
        let last = if looped { chain[1] } else { tok.eos_id() };
        let next = chain.get(i + 1).copied().unwrap_or(last);
        out[next as usize * h + i] = 10.0;
    }
    let z = |shape: Vec<usize>| NamedTensor {
        name: String::new(),
        data: vec![0.0; shape.iter().product()],
        shape,
    };
    let named = |name: &str, mut t: NamedTensor| {
        t.name = name.into();
        t
    };
    let ones = |n| NamedTensor {
        name: String::new(),
        shape: vec![n],
        data: vec![1.0; n],
    };
    let p = "gpt_neox.layers.0";
    let tensors = vec![
        NamedTensor {
            name: "gpt_neox.embed_in.weight".into(),
            shape: vec![v, h],
            data: embed,
        },
        NamedTensor {
            name: "embed_out.weight".into(),
            shape: vec![v, h],
            data: out,
        },
        named("gpt_neox.final_layer_norm.weight", ones(h)),
        named("gpt_neox.final_layer_norm.bias", z(vec![h])),
        named(&format!("{p}.input_layernorm.weight"), ones(h)),
        named(&format!("{p}.input_layernorm.bias"), z(vec![h])),
        named(&format!("{p}.post_attention_layernorm.weight"), ones(h)),
        named(&format!("{p}.post_attention_layernorm.bias"), z(vec![h])),
        named(
            &format!("{p}.attention.query_key_value.weight"),
            z(vec![3 * h, h]),
        ),
        named(
            &format!("{p}.attention.query_key_value.bias"),
            z(vec![3 * h]),
        ),
        named(&format!("{p}.attention.dense.weight"), z(vec![h, h])),
        named(&format!("{p}.attention.dense.bias"), z(vec![h])),
        named(&format!("{p}.mlp.dense_h_to_4h.weight"), z(vec![f, h])),
        named(&format!("{p}.mlp.dense_h_to_4h.bias"), z(vec![f])),
        named(&format!("{p}.mlp.dense_4h_to_h.weight"), z(vec![h, f])),
        named(&format!("{p}.mlp.dense_4h_to_h.bias"), z(vec![h])),
    ];
    let hf = dir.join(format!("{name}-hf"));
    std::fs::create_dir_all(&hf).unwrap();
    write_safetensors(&hf.join("model.safetensors"), &tensors).unwrap();
    let config = json!({"model_type": "gpt_neox", "vocab_size": v, "hidden_size": h,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": f,
        "hidden_act": "gelu", "rotary_pct": 0.5, "max_position_embeddings": 1024,
        "use_parallel_residual": true, "eos_token_id": 0});
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(&tok_file, hf.join("tokenizer.json")).unwrap();
    let out_dir = dir.join(name);
    trainer::cli::run_args([
        "trainer",
        "export-web",
        "--model",
        hf.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--quant",
        "f32",
        "--max-new-tokens",
        "16",
    ])
    .unwrap();
    out_dir
}

fn wait_done(b: &Browser, what: &str) -> Value {
    let t0 = Instant::now();
    let r = b.wait_for(DONE, Duration::from_secs(900));
    let Some(r) = r else {
        for l in b.console() {
            eprintln!("[console] {l}");
        }
        panic!("{what}: no answer within 15 minutes");
    };
    eprintln!("{what}: {:.1} s, {r}", t0.elapsed().as_secs_f64());
    if r["state"] != "done" {
        for l in b.console() {
            eprintln!("[console] {l}");
        }
        panic!("{what}: the page reports an error: {}", r["error"]);
    }
    r
}

fn ids(v: &Value) -> Vec<u32> {
    v["tokens"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn link(question: &str, model: &str, max_new: usize, extra: &str) -> String {
    format!(
        "/#q={}&t=0&p=1&n={max_new}&s=0&m={model}{extra}",
        web::settings::encode(question)
    )
}

#[test]
fn web_app_in_chromium() {
    let dist = std::env::var_os("LAW_WEB_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("web/dist"));
    let required = std::env::var("LAW_BROWSER_TESTS").is_ok_and(|v| v == "1");
    if !dist.join("index.html").is_file() || !browser::available() {
        assert!(
            !required,
            "LAW_BROWSER_TESTS=1 but {} or chromium is missing",
            dist.display()
        );
        eprintln!("skipped: build the site (web/dist) and install chromium to run this test");
        return;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_app");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let payload = "<script>";
    let echo = echo_package(&tmp, "xss-echo", payload, false);
    let looping = echo_package(&tmp, "loop-echo", "<i>", true);
    let broken = tmp.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(echo.join("manifest.json")).unwrap()).unwrap();
    manifest["files"][0]["sha256"] = "not-a-hash".into();
    std::fs::write(broken.join("manifest.json"), manifest.to_string()).unwrap();
    let server = StaticServer::start(
        &dist,
        &[
            ("/models/xss-echo", &echo),
            ("/models/loop-echo", &looping),
            ("/models/broken", &broken),
        ],
    );

    let demo = dist.join("models/law-tiny-demo");
    let (want_ids, want_text) = native_answer(&demo, QUESTION, MAX_NEW);
    eprintln!("native: {} tokens: {want_text}", want_ids.len());

    // 1. A share link, on WebGPU.
    let b = Browser::start(WEBGPU_FLAGS);
    b.goto(&server.url(&link(QUESTION, "law-tiny-demo", MAX_NEW, "")));
    let r = wait_done(&b, "first visit");
    assert_eq!(r["backend"], "webgpu");
    assert_eq!(ids(&r), want_ids, "token ids differ from trainer generate");
    assert_eq!(r["text"], want_text.as_str());
    let shot = tmp.join("answered.png");
    b.screenshot(&shot);
    eprintln!("screenshot of the answered page: {}", shot.display());
    let first = server.requests();
    assert!(
        first
            .iter()
            .any(|l| l.contains("model-00001-of-00001.safetensors"))
    );

    // 2. Reload: every file comes from Cache Storage; only the manifest is asked for again.
    server.clear();
    b.refresh();
    let r2 = wait_done(&b, "reload");
    assert_eq!(ids(&r2), want_ids);
    let again = server.requests();
    let refetched: Vec<_> = again
        .iter()
        .filter(|l| l.contains(".safetensors") || l.contains("tokenizer.json"))
        .collect();
    assert!(
        refetched.is_empty(),
        "fetched again after reload: {refetched:?}"
    );

    // 3. HTML in the answer is text, and garbage in a link falls back with a notice.
    b.goto(&server.url(&link("x", "xss-echo", 16, "&t=abc")));
    b.refresh();
    let r3 = wait_done(&b, "html answer");
    assert_eq!(r3["text"], payload);
    assert_eq!(r3["elements_inside"], 0);
    let notices = r3["notices"].to_string();
    assert!(
        notices.contains("temperature"),
        "no notice for t=abc: {notices}"
    );

    // 4. A package changed on the server: the cached copy no longer matches the manifest,
    //    so it is fetched again and the new model answers.
    echo_package(&tmp, "xss-echo", "<b>", false);
    server.clear();
    b.refresh();
    let r4 = wait_done(&b, "changed package");
    assert_eq!(r4["text"], "<b>");
    assert!(
        server
            .requests()
            .iter()
            .any(|l| l.contains("/models/xss-echo/model-")),
        "the stale cached weights were not fetched again"
    );

    // 5. A bad manifest is a named error on the page, and the tab lives on.
    b.goto(&server.url(&link("x", "broken", 16, "")));
    b.refresh();
    let err = b
        .wait_for(
            "const a = document.querySelector('[data-testid=answer]'); \
             return a && a.dataset.state === 'error' ? document.querySelector('[data-testid=error]').textContent : null;",
            Duration::from_secs(120),
        )
        .expect("an error state for a bad manifest");
    let err = err.as_str().unwrap();
    assert!(
        err.contains("files[0].sha256") && err.contains("manifest.json"),
        "{err}"
    );

    // 6. The stop button ends an answer that would run to 512 tokens.
    b.goto(&server.url(&link("x", "loop-echo", 512, "")));
    b.refresh();
    b.wait_for(
        "const a = document.querySelector('[data-testid=answer]'); \
         return a && a.dataset.state === 'generating' && a.dataset.tokens.split(',').length >= 3 ? true : null;",
        Duration::from_secs(300),
    )
    .expect("generation started");
    b.eval("document.querySelector('[data-testid=stop]').click(); return null;");
    let stopped = ids(&wait_done(&b, "stopped"));
    assert!(
        stopped.len() >= 3 && stopped.len() < 512,
        "{} tokens",
        stopped.len()
    );
    drop(b);

    // 7. No WebGPU: the app says so and answers the same on the CPU.
    let cpu = Browser::start(&[]);
    cpu.goto(&server.url(&link(QUESTION, "law-tiny-demo", MAX_NEW, "")));
    let r6 = wait_done(&cpu, "no WebGPU");
    assert_eq!(r6["backend"], "cpu");
    assert!(
        r6["notices"].to_string().contains("CPU"),
        "{}",
        r6["notices"]
    );
    assert_eq!(ids(&r6), want_ids);

    // No request of either browser carried the question.
    let encoded = web::settings::encode(QUESTION);
    for l in first.iter().chain(&again).chain(&server.requests()) {
        assert!(
            !l.contains(QUESTION) && !l.contains(&encoded) && !l.contains("q="),
            "{l}"
        );
    }
    eprintln!(
        "numbers: webgpu ttft {} ms, decode {} tok/s; cpu-wasm ttft {} ms, decode {} tok/s",
        r["ttft_ms"], r["tps"], r6["ttft_ms"], r6["tps"]
    );
}
