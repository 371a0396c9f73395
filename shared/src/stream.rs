//! CubeCL gives each host thread a stream of its own on every device (cubecl 0.10's
//! `StreamId::current`, from a thread-local). A thread that queues work for a device on behalf
//! of another (a data parallel replica's thread, `trainer`'s `Replicas`) runs it on the other
//! thread's stream, so that a device keeps one stream whichever thread queues its work: its
//! tensors are never handed between streams, and cuBLAS's products keep their place on it
//! (`cublas.rs` orders them per stream).

/// A host thread's CubeCL stream id (nothing, in builds without CubeCL).
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    #[cfg(feature = "cubecl")]
    id: cubecl::stream_id::StreamId,
}

impl Stream {
    /// The calling thread's stream.
    pub fn current() -> Self {
        Self {
            #[cfg(feature = "cubecl")]
            id: cubecl::stream_id::StreamId::current(),
        }
    }

    /// `f()` with its CubeCL work queued on this stream (the calling thread's own again after).
    /// Two threads must not queue work for the same device on one stream at once.
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        #[cfg(feature = "cubecl")]
        {
            self.id.executes(f)
        }
        #[cfg(not(feature = "cubecl"))]
        {
            f()
        }
    }
}

#[cfg(all(test, feature = "cubecl"))]
mod tests {
    use super::*;

    /// Another thread running on this thread's stream sees its stream id, and its own after.
    #[test]
    fn another_thread_runs_on_this_threads_stream() {
        let here = Stream::current();
        let (inside, own, after) = std::thread::spawn(move || {
            let own = cubecl::stream_id::StreamId::current();
            let inside = here.run(cubecl::stream_id::StreamId::current);
            (inside, own, cubecl::stream_id::StreamId::current())
        })
        .join()
        .unwrap();
        assert_eq!(inside, here.id);
        assert_ne!(own, here.id);
        assert_eq!(after, own);
    }
}
