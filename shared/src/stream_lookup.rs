//! Finds the CUDA stream CubeCL runs a thread's work on, so that cuBLAS can queue its products
//! on that same stream (`cublas.rs`). cubecl-cuda 0.10 keeps the stream in a private field of
//! its server; the server's `Debug` text is the one public view of it:
//! `StreamPool { streams: [None, Some(StreamWrapper { stream: Stream { sys: 0x…, … }, … }), …],
//! …, max_streams: N }`, the stream of a stream id at index `id % max_streams`
//! (cubecl-runtime's `stream_index`). The text is read once per stream and the stream checked
//! on the GPU before use (`cublas.rs`); anything unexpected here gives `None`, and the products
//! keep the flags (`kernels/flags.rs`).

/// The `sys` handle (an address) of the stream for `stream_id` in a cubecl-cuda server's
/// `Debug` text, `None` where the text has no such stream or another shape than expected.
pub fn stream_address(server_debug: &str, stream_id: u64) -> Option<u64> {
    const POOL: &str = "StreamPool { streams: [";
    let start = server_debug.find(POOL)? + POOL.len();
    let (items, rest) = list_items(&server_debug[start..])?;
    let max = number_after(rest, "max_streams: ")?;
    if max == 0 || items.len() < max as usize {
        return None;
    }
    let item = items[(stream_id % max) as usize].trim();
    let wrapper = item.strip_prefix("Some(StreamWrapper { stream: Stream { sys: 0x")?;
    let hex: String = wrapper
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).ok().filter(|&a| a != 0)
}

/// The items of a `Debug` list whose `[` is just before `text` (split at its top-level commas,
/// quoted strings skipped), and the text after its `]`.
fn list_items(text: &str) -> Option<(Vec<&str>, &str)> {
    let (mut depth, mut item_start, mut quoted, mut escaped) = (0usize, 0, false, false);
    let mut items = Vec::new();
    for (i, ch) in text.char_indices() {
        if quoted {
            match ch {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => quoted = true,
            '(' | '[' | '{' => depth += 1,
            ')' | '}' => depth = depth.checked_sub(1)?,
            ']' if depth == 0 => {
                let last = text[item_start..i].trim();
                if !last.is_empty() {
                    items.push(last);
                }
                return Some((items, &text[i + 1..]));
            }
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(text[item_start..i].trim());
                item_start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The decimal number just after the first `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<u64> {
    let at = text.find(label)? + label.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's `Debug` text as cubecl-cuda 0.10's derives write it.
    fn stream(addr: &str, cursor: u32) -> String {
        format!(
            "Some(StreamWrapper {{ stream: Stream {{ sys: {addr}, memory_management_gpu: \
             DynamicMemoryManagement \"cubecl_cuda::compute::storage::gpu::GpuStorage\", \
             memory_management_cpu: DynamicMemoryManagement \"a \\\"]\\\" b\", errors: [], \
             drop_queue: PendingDropQueue {{ pending: [[1, 2], [3]], staged: [], policy: \
             FlushingPolicy {{ max_bytes_count: 64, max_bytes_size: 67108864 }}, policy_state: \
             FlushingPolicyState {{ bytes_count: 3, bytes_size: 24 }} }} }}, cursor: {cursor}, \
             last_synced: {{1: 4}} }})"
        )
    }

    fn server(streams: &[String], max: usize) -> String {
        format!(
            "CudaServer {{ ctx: CudaContext {{ context: 0x55d0c0ffee00, module_names: {{}} }}, \
             device_id: DeviceId {{ type_id: 0, index_id: 0 }}, streams: MultiStream {{ \
             streams: StreamPool {{ streams: [{}], factory: EventStreamBackendWrapper {{ \
             backend: CudaStreamBackend {{ mem_alignment: 256 }} }}, max_streams: {max} }}, \
             logger: ServerLogger, max_streams: {max}, gc: GcThread, shared_bindings_pool: [] \
             }}, comm_stream: 0x0, communicators: {{}} }}",
            streams.join(", ")
        )
    }

    #[test]
    fn finds_the_stream_of_a_stream_id() {
        let none = "None".to_string();
        let text = server(
            &[
                none.clone(),
                stream("0x7f3a2c001230", 9),
                none.clone(),
                stream("0x7f3a2c00abcd", 2),
                none,
            ],
            4,
        );
        assert_eq!(stream_address(&text, 1), Some(0x7f3a2c001230));
        assert_eq!(stream_address(&text, 7), Some(0x7f3a2c00abcd));
        // index 4 % 4 = 0: a stream not made yet
        assert_eq!(stream_address(&text, 4), None);
        assert_eq!(stream_address(&text, 2), None);
    }

    #[test]
    fn other_shapes_give_none() {
        let one = [stream("0x7f3a2c001230", 0)];
        assert_eq!(stream_address(&server(&one, 1), 5), Some(0x7f3a2c001230));
        assert_eq!(stream_address(&server(&one, 0), 0), None);
        assert_eq!(
            stream_address(&server(&one, 2), 0),
            None,
            "fewer items than streams"
        );
        assert_eq!(stream_address(&server(&[stream("0x0", 0)], 1), 0), None);
        let renamed = server(&one, 1).replace("sys:", "handle:");
        assert_eq!(stream_address(&renamed, 0), None);
        let cut = server(&one, 1);
        assert_eq!(stream_address(&cut[..cut.len() / 2], 0), None);
        assert_eq!(stream_address("", 0), None);
    }

    /// The pool's text as cubecl-runtime 0.10's own `Debug` writes it, around a stand-in for
    /// cubecl-cuda's `Stream` (its first field, `sys`, the handle).
    #[cfg(feature = "cubecl")]
    #[test]
    fn reads_cubecl_runtimes_stream_pool() {
        use cubecl::server::{Binding, ServerError};
        use cubecl::stream_id::StreamId;
        use cubecl_runtime::logging::ServerLogger;
        use cubecl_runtime::stream::{EventStreamBackend, MultiStream};
        use std::sync::atomic::{AtomicU64, Ordering};

        #[derive(Debug)]
        #[allow(dead_code)] // read through `Debug`
        struct Stream {
            sys: *mut std::ffi::c_void,
            errors: Vec<String>,
        }
        #[derive(Debug)]
        struct Backend;
        static NEXT: AtomicU64 = AtomicU64::new(0x7f00_0000_1000);
        impl EventStreamBackend for Backend {
            type Stream = Stream;
            type Event = ();
            fn create_stream(&self) -> Stream {
                let sys = NEXT.fetch_add(0x10, Ordering::Relaxed) as usize as *mut _;
                Stream {
                    sys,
                    errors: vec!["a ] in [ an error\"".into()],
                }
            }
            fn handle_cursor(_: &Stream, _: &Binding) -> u64 {
                0
            }
            fn is_healthy(_: &Stream) -> bool {
                true
            }
            fn flush(_: &mut Stream) {}
            fn wait_event(_: &mut Stream, _: ()) {}
            fn wait_event_sync(_: ()) -> Result<(), ServerError> {
                Ok(())
            }
        }
        let mut pool = MultiStream::new(std::sync::Arc::new(ServerLogger::default()), Backend, 4);
        let mut made = Vec::new();
        for id in [6u64, 3] {
            pool.resolve(StreamId { value: id }, std::iter::empty(), false)
                .expect("a stream");
            made.push(NEXT.load(Ordering::Relaxed) - 0x10);
        }
        let text = format!("CudaServer {{ ctx: CudaContext {{ }}, streams: {pool:?}, comm: 0x0 }}");
        assert_eq!(stream_address(&text, 6), Some(made[0]), "{text}");
        assert_eq!(stream_address(&text, 10), Some(made[0]), "10 % 4 = 6 % 4");
        assert_eq!(stream_address(&text, 3), Some(made[1]), "{text}");
        assert_eq!(stream_address(&text, 0), None, "{text}");
    }
}
