//! Downloads with progress, verified by sha256, kept in Cache Storage: a reload takes every
//! file from the cache; an entry that no longer matches the manifest (corrupt or stale) is
//! dropped and fetched again.

use std::collections::HashMap;

use js_sys::{Reflect, Uint8Array};
use shared::manifest::{FileEntry, Manifest};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, RequestCache, RequestInit, Response};

use super::{post, scope};
use crate::protocol::{ErrorKind, Event, Phase};

pub const CACHE_NAME: &str = "law-polyglot-models-v1";

pub type Failure = (ErrorKind, String);

fn js(e: JsValue) -> String {
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn fetch(url: &str, no_store: bool) -> Result<Response, Failure> {
    let init = RequestInit::new();
    if no_store {
        init.set_cache(RequestCache::NoStore);
    }
    let resp = JsFuture::from(scope().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| (ErrorKind::Network, format!("{url}: {}", js(e))))?;
    let resp: Response = resp.unchecked_into();
    if !resp.ok() {
        return Err((
            ErrorKind::Network,
            format!("{url}: HTTP {} {}", resp.status(), resp.status_text()),
        ));
    }
    Ok(resp)
}

/// The whole body, posting download progress (`offset` bytes already done of `total`) for
/// `file` as it arrives.
async fn read_body(
    resp: &Response,
    url: &str,
    file: &str,
    offset: u64,
    total: u64,
) -> Result<Vec<u8>, Failure> {
    let net = |e: JsValue| (ErrorKind::Network, format!("{url}: {}", js(e)));
    let body = resp
        .body()
        .ok_or_else(|| (ErrorKind::Network, format!("{url}: empty response")))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut buf = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(net)?;
        if Reflect::get(&chunk, &"done".into())
            .map_err(net)?
            .is_truthy()
        {
            break;
        }
        let bytes: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(net)?
            .unchecked_into();
        let start = buf.len();
        buf.resize(start + bytes.length() as usize, 0);
        bytes.copy_to(&mut buf[start..]);
        post(&Event::Progress {
            phase: Phase::Download,
            file: file.into(),
            loaded: offset + buf.len() as u64,
            total,
        });
    }
    Ok(buf)
}

pub async fn manifest(base_url: &str) -> Result<Manifest, Failure> {
    let url = format!("{base_url}manifest.json");
    post(&Event::Progress {
        phase: Phase::Manifest,
        file: url.clone(),
        loaded: 0,
        total: 0,
    });
    let resp = fetch(&url, true).await?;
    let bytes = read_body(&resp, &url, "manifest.json", 0, 0).await?;
    Manifest::parse(&bytes, &url).map_err(|e| (ErrorKind::Manifest, e.to_string()))
}

async fn open_cache() -> Option<Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME))
        .await
        .ok()
        .map(JsValue::unchecked_into)
}

async fn cached(cache: &Cache, url: &str, entry: &FileEntry) -> Option<Vec<u8>> {
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    if hit.is_undefined() {
        return None;
    }
    let resp: Response = hit.unchecked_into();
    let buf = JsFuture::from(resp.array_buffer().ok()?).await.ok()?;
    let bytes = Uint8Array::new(&buf).to_vec();
    if entry.verify(&bytes).is_ok() {
        return Some(bytes);
    }
    web_sys::console::warn_1(
        &format!("{url}: cached copy is stale or corrupt, fetching again").into(),
    );
    let _ = JsFuture::from(cache.delete_with_str(url)).await;
    None
}

/// Every file of `manifest`, from the cache or the network; returns them and the bytes
/// downloaded.
pub async fn files(
    base_url: &str,
    manifest: &Manifest,
) -> Result<(HashMap<String, Vec<u8>>, u64), Failure> {
    let cache = open_cache().await;
    if cache.is_none() {
        web_sys::console::warn_1(
            &"Cache Storage is unavailable: the model will not be kept".into(),
        );
    }
    let mut out = HashMap::new();
    let (mut done, mut downloaded) = (0u64, 0u64);
    for entry in &manifest.files {
        let url = format!("{base_url}{}", entry.name);
        let hit = match &cache {
            Some(c) => cached(c, &url, entry).await,
            None => None,
        };
        let bytes = match hit {
            Some(b) => {
                post(&Event::Progress {
                    phase: Phase::Cache,
                    file: entry.name.clone(),
                    loaded: done + entry.size,
                    total: manifest.total_bytes,
                });
                b
            }
            None => {
                let resp = fetch(&url, true).await?;
                let b = read_body(&resp, &url, &entry.name, done, manifest.total_bytes).await?;
                entry
                    .verify(&b)
                    .map_err(|e| (ErrorKind::Integrity, format!("{url}: {e}")))?;
                downloaded += b.len() as u64;
                if let Some(c) = &cache {
                    let body = Uint8Array::from(&b[..]);
                    if let Ok(r) = Response::new_with_opt_buffer_source(Some(&body)) {
                        let _ = JsFuture::from(c.put_with_str(&url, &r)).await;
                    }
                }
                b
            }
        };
        done += entry.size;
        out.insert(entry.name.clone(), bytes);
    }
    Ok((out, downloaded))
}
