//! Drive headless Chromium (real WebGPU on SwiftShader, ../shared/browser/README.md) through
//! chromedriver's W3C WebDriver API, against a static server on 127.0.0.1 that logs every
//! request it serves.
#![allow(dead_code)]

mod server;
pub use server::StaticServer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const BASE_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--window-size=420,900",
];
pub const WEBGPU_FLAGS: &[&str] = &[
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--use-angle=swiftshader",
];

/// Whether the browser tests can run here (chromium and chromedriver installed).
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, url).timeout(Duration::from_secs(120));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => r.into_json::<Value>().expect("webdriver JSON")["value"].take(),
        Err(ureq::Error::Status(code, r)) => {
            panic!(
                "webdriver {method} {url}: HTTP {code}: {}",
                r.into_string().unwrap_or_default()
            )
        }
        Err(e) => panic!("webdriver {method} {url}: {e}"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Start chromedriver and a Chromium session with a fresh profile and `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!("law-chromium-{port}"));
        let _ = std::fs::remove_dir_all(&profile);
        let mut args: Vec<String> = BASE_FLAGS
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 60000, "pageLoad": 120000}
        }}});
        let session = call("POST", &format!("{base}/session"), Some(caps))["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Self {
            driver,
            base,
            session,
            profile,
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/session/{}/{tail}", self.base, self.session)
    }

    pub fn goto(&self, url: &str) {
        call("POST", &self.url("url"), Some(json!({ "url": url })));
    }

    pub fn refresh(&self) {
        call("POST", &self.url("refresh"), Some(json!({})));
    }

    /// Run `script` (a function body) in the page and return its value.
    pub fn eval(&self, script: &str) -> Value {
        call(
            "POST",
            &self.url("execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Poll `script` until it returns a non-null value or `timeout` passes.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> Option<Value> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            let v = self.eval(script);
            if !v.is_null() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    }

    /// Console lines so far (level and message).
    pub fn console(&self) -> Vec<String> {
        let logs = call(
            "POST",
            &self.url("se/log"),
            Some(json!({"type": "browser"})),
        );
        logs.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let png = call("GET", &self.url("screenshot"), None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session))
            .timeout(Duration::from_secs(30))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
