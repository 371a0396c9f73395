//! The model worker's wasm entry point (built by trunk as `data-type="worker"`).

fn main() {
    #[cfg(target_arch = "wasm32")]
    web::worker::start();
}
