//! Where a CUDA training step's GPU time goes, without a profiler (`trainer bench-train
//! --timeline`): the model marks the start of each part of its work (`mark`), each mark
//! records a CUDA event on the stream CubeCL and cuBLAS queue that work on, and the time
//! between two events is the GPU's time for the work queued between them, cuBLAS's products
//! included, with nothing synchronised in between (CubeCL's profiler waits around each kernel
//! and times only its own kernels).
//!
//! Each mark also keeps the host's time when it was queued. The GPU cannot reach a mark before
//! the host queued it, so where the GPU's time at a mark comes within [`STARVED_MS`] of the
//! host's (the two clocks aligned at the point where they are closest), the GPU had caught up
//! with the host there: that part of the step ran at the host's pace, not the GPU's.
//!
//! Marks are recorded only on CUDA with cuBLAS on CubeCL's stream (`cublas.rs`), and only while
//! [`set_enabled`] is on; elsewhere [`mark`] costs one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;

use crate::ModelBackend;

static ON: AtomicBool = AtomicBool::new(false);

/// The label of the mark that starts each step (the caller marks it).
pub const STEP: &str = "step";

/// How close (ms) the GPU's time at a mark may come to the host's for the interval that ends
/// there to count as set by the host: about the latency of a queued CUDA command.
pub const STARVED_MS: f64 = 0.05;

/// Starts or stops recording marks.
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Marks the point where the work queued next on `x`'s device starts; `label` names that work
/// (until the next mark).
pub fn mark<B: ModelBackend, const D: usize>(x: &Tensor<B, D>, label: &'static str) {
    if enabled() {
        B::mark(&x.device(), label);
    }
}

/// [`mark`] where the caller holds a device rather than a tensor (the training loop's marks).
pub fn mark_on<B: ModelBackend>(device: &B::Device, label: &'static str) {
    if enabled() {
        B::mark(device, label);
    }
}

/// One recorded mark: the GPU's time at it and the host's time when it was queued, in ms
/// (each from its own origin).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: &'static str,
    pub gpu_ms: f64,
    pub host_ms: f64,
}

/// One label's share of a step, averaged over the steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub label: &'static str,
    /// Marks with this label a step.
    pub marks: f64,
    /// GPU time a step from these marks to the marks after them.
    pub gpu_ms: f64,
    /// The part of `gpu_ms` in intervals whose end the GPU reached as the host queued it.
    pub host_paced_ms: f64,
}

/// The rows of `points` (in the order recorded; each step starts with a [`STEP`] mark, and a
/// last mark may end the last step), by label in order of first appearance, averaged over the
/// steps; points before the first step are left out.
pub fn summarize(points: &[Point]) -> Vec<Row> {
    let starts: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].label == STEP)
        .collect();
    let mut rows: Vec<Row> = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        // a step runs to the next step's mark, or to the last point
        let end = starts.get(k + 1).copied().unwrap_or(points.len() - 1);
        let step = &points[start..=end];
        // the clocks aligned where the GPU came closest to the host
        let offset = step
            .iter()
            .map(|p| p.host_ms - p.gpu_ms)
            .fold(f64::NEG_INFINITY, f64::max);
        for pair in step.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            let ms = to.gpu_ms - from.gpu_ms;
            let paced = to.gpu_ms + offset - to.host_ms < STARVED_MS;
            let row = match rows.iter().position(|r| r.label == from.label) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(Row {
                        label: from.label,
                        marks: 0.0,
                        gpu_ms: 0.0,
                        host_paced_ms: 0.0,
                    });
                    rows.last_mut().expect("just pushed")
                }
            };
            row.marks += 1.0;
            row.gpu_ms += ms;
            if paced {
                row.host_paced_ms += ms;
            }
        }
    }
    let n = starts.len().max(1) as f64;
    for r in &mut rows {
        r.marks /= n;
        r.gpu_ms /= n;
        r.host_paced_ms /= n;
    }
    rows
}

/// The rows as a table, with the step's total.
pub fn table(rows: &[Row]) -> String {
    let total: f64 = rows.iter().map(|r| r.gpu_ms).sum();
    let paced: f64 = rows.iter().map(|r| r.host_paced_ms).sum();
    let mut out = format!(
        "{:<24} {:>7} {:>9} {:>6} {:>12}\n",
        "GPU timeline, a step", "marks", "GPU ms", "share", "host-paced"
    );
    for r in rows {
        out += &format!(
            "{:<24} {:>7.1} {:>9.3} {:>5.1}% {:>12.3}\n",
            r.label,
            r.marks,
            r.gpu_ms,
            100.0 * r.gpu_ms / total.max(f64::MIN_POSITIVE),
            r.host_paced_ms
        );
    }
    out += &format!(
        "{:<24} {:>7} {:>9.3} {:>6} {:>12.3}\n",
        "total", "", total, "", paced
    );
    out
}

#[cfg(feature = "cublas")]
pub use cuda::{record, take};

#[cfg(feature = "cublas")]
mod cuda {
    // FFI: CUDA events are raw driver handles.
    #![allow(unsafe_code)]

    use std::any::Any;
    use std::panic::AssertUnwindSafe;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    use cubecl::cuda::{CudaDevice, CudaRuntime};
    use cudarc::driver::CudaContext;
    use cudarc::driver::result::event;
    use cudarc::driver::sys::{CUevent, CUevent_flags, CUstream};

    use super::Point;

    type Server = <CudaRuntime as cubecl::Runtime>::Server;

    /// A recorded CUDA event (a driver handle, used on CubeCL's device thread).
    struct Event(CUevent);
    // SAFETY: a CUDA event handle may be used from any thread of its context.
    unsafe impl Send for Event {}

    static MARKS: Mutex<Vec<(&'static str, Event, f64)>> = Mutex::new(Vec::new());

    fn host_ms() -> f64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
    }

    /// Queues an event on CubeCL's stream of the calling thread on `device`, where cuBLAS has
    /// found that stream (a mark is skipped otherwise, and on any other runtime).
    pub fn record<D: Any>(device: &D, label: &'static str) {
        let Some(device) = (device as &dyn Any).downcast_ref::<CudaDevice>() else {
            return;
        };
        let Some((stream, ctx)) = crate::cublas::current_stream(device.index) else {
            return;
        };
        use cubecl::device::Device;
        cubecl::device_handle::DeviceHandle::<Server>::new(device.to_id()).submit(move |_| {
            // on the device thread, in order with the kernels and products queued before; a
            // panic (cudarc's, on a symbol the driver lacks) must not take that thread down
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| record_here(stream, &ctx, label)));
        });
    }

    fn record_here(stream: u64, ctx: &CudaContext, label: &'static str) {
        let made = ctx
            .bind_to_thread()
            .ok()
            .and_then(|()| event::create(CUevent_flags::CU_EVENT_DEFAULT).ok());
        let Some(ev) = made else { return };
        // SAFETY: a live event and CubeCL's live stream of this context.
        if unsafe { event::record(ev, stream as usize as CUstream) }.is_ok()
            && let Ok(mut marks) = MARKS.lock()
        {
            marks.push((label, Event(ev), host_ms()));
            return;
        }
        // SAFETY: the event was made above and is used nowhere else.
        let _ = unsafe { event::destroy(ev) };
    }

    /// The marks recorded so far on a CUDA `device` (none on another), their GPU times from
    /// the first, after the GPU finished them; their events are freed.
    pub fn take<D: Any>(device: &D) -> Vec<Point> {
        std::panic::catch_unwind(AssertUnwindSafe(|| take_here(device))).unwrap_or_default()
    }

    fn take_here<D: Any>(device: &D) -> Vec<Point> {
        use cubecl::device::Device;
        let Some(device) = (device as &dyn Any).downcast_ref::<CudaDevice>() else {
            return Vec::new();
        };
        let Some((_, ctx)) = crate::cublas::current_stream(device.index) else {
            return Vec::new();
        };
        // after every mark queued before it
        let taken = cubecl::device_handle::DeviceHandle::<Server>::new(device.to_id())
            .submit_blocking(|_| {
                std::mem::take(&mut *MARKS.lock().unwrap_or_else(|e| e.into_inner()))
            });
        let Ok(marks) = taken else {
            return Vec::new();
        };
        if ctx.bind_to_thread().is_err() {
            return Vec::new();
        }
        let first = marks.first().map(|m| m.1.0);
        let points = marks
            .iter()
            .map_while(|(label, ev, host)| {
                // SAFETY: live events of this context, recorded on one stream.
                let gpu = unsafe {
                    event::synchronize(ev.0).ok()?;
                    event::elapsed(first?, ev.0).ok()?
                };
                Some(Point {
                    label,
                    gpu_ms: gpu as f64,
                    host_ms: *host,
                })
            })
            .collect();
        for (_, ev, _) in marks {
            // SAFETY: each event once, after its last use above.
            let _ = unsafe { event::destroy(ev.0) };
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &'static str, gpu_ms: f64, host_ms: f64) -> Point {
        Point {
            label,
            gpu_ms,
            host_ms,
        }
    }

    /// Two steps of `step → a → b → a`, the GPU behind the host except where it catches up.
    #[test]
    fn summarize_sums_intervals_by_label_and_finds_host_paced_ones() {
        let points = [
            p("warm-up", 0.0, 0.0),
            // step 1: host at 100 ms; the GPU takes 1, 4, 2 and 3 ms
            p(STEP, 10.0, 100.0),
            p("a", 11.0, 100.2),
            p("b", 15.0, 100.4),
            p("a", 17.0, 100.6),
            // step 2 starts once the host queued it: the GPU waited (aligned here)
            p(STEP, 20.0, 110.0),
            p("a", 21.0, 110.1),
            p("b", 23.0, 110.2),
            p("a", 26.0, 110.3),
            p("end", 27.0, 110.4),
        ];
        let rows = summarize(&points);
        let labels: Vec<_> = rows.iter().map(|r| r.label).collect();
        assert_eq!(labels, [STEP, "a", "b"]);
        let step = &rows[0];
        assert_eq!((step.marks, step.gpu_ms), (1.0, 1.0));
        let a = &rows[1];
        // step 1: 4 + 3 (a → STEP); step 2: 2 + 1 (a → end)
        assert_eq!((a.marks, a.gpu_ms), (2.0, 5.0));
        // step 1's last interval ends where the GPU met the host (offset 90): 3 ms host-paced;
        // step 2's offset is 90 too (its first mark), and nothing else comes within 0.05 ms
        assert_eq!(a.host_paced_ms, 1.5);
        assert_eq!(
            (rows[2].marks, rows[2].gpu_ms, rows[2].host_paced_ms),
            (1.0, 2.5, 0.0)
        );
        let t = table(&rows);
        assert!(t.contains("total") && t.contains("8.500"), "{t}");
    }

    #[test]
    fn summarize_without_steps_is_empty() {
        assert!(summarize(&[]).is_empty());
        assert!(summarize(&[p("a", 0.0, 0.0), p("b", 1.0, 1.0)]).is_empty());
    }
}
