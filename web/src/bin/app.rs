//! The page's wasm entry point.

fn main() {
    #[cfg(target_arch = "wasm32")]
    web::app::start();
}
