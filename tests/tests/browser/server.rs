//! A static file server on 127.0.0.1 for browser tests: serves a folder (plus extra folders
//! mounted at URL prefixes), sends `Cache-Control: no-cache`, and logs every request line.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct StaticServer {
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "wasm" => "application/wasm",
        "css" => "text/css",
        "json" => "application/json",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

fn resolve(mounts: &BTreeMap<String, PathBuf>, root: &Path, path: &str) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.split('/').any(|seg| seg == ".." || seg.contains('%')) {
        return None;
    }
    for (prefix, dir) in mounts.iter().rev() {
        if let Some(rest) = path.strip_prefix(prefix.as_str()) {
            return Some(dir.join(rest.trim_start_matches('/')));
        }
    }
    let rel = path.trim_start_matches('/');
    Some(root.join(if rel.is_empty() { "index.html" } else { rel }))
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    mounts: &BTreeMap<String, PathBuf>,
    log: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let line = line.trim_end().to_string();
    log.lock().unwrap().push(line.clone());
    let path = line.split(' ').nth(1).unwrap_or("/");
    let file = resolve(mounts, root, path).filter(|p| p.is_file());
    let (status, body, kind) = match file.as_ref().and_then(|p| std::fs::read(p).ok()) {
        Some(b) => ("200 OK", b, mime(file.as_ref().unwrap())),
        None => ("404 Not Found", b"not found".to_vec(), "text/plain"),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(&body));
}

impl StaticServer {
    /// Serve `root` and each `(url prefix, folder)` of `mounts`.
    pub fn start(root: &Path, mounts: &[(&str, &Path)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (root, l) = (root.to_path_buf(), log.clone());
        let mounts: Arc<BTreeMap<String, PathBuf>> = Arc::new(
            mounts
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_path_buf()))
                .collect(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, l, m) = (root.clone(), l.clone(), mounts.clone());
                std::thread::spawn(move || serve(stream, &root, &m, &l));
            }
        });
        Self { port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request line served so far (e.g. `GET /models/x/manifest.json HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}
