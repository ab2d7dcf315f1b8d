//! Timing with CUDA events: warm-up runs first (module load, caches, clocks), then each repeat bracketed by its own
//! pair of events, summarised by the median (robust to the odd preempted run).

use cudarc::driver::sys::CUevent_flags;

use super::{Gpu, GpuError};

/// Durations of one timed operation, in milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl Timing {
    pub fn from_samples(mut samples_ms: Vec<f64>) -> Self {
        samples_ms.sort_by(f64::total_cmp);
        let n = samples_ms.len();
        let median_ms = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => samples_ms[n / 2],
            _ => 0.5 * (samples_ms[n / 2 - 1] + samples_ms[n / 2]),
        };
        Self {
            median_ms,
            min_ms: samples_ms.first().copied().unwrap_or(f64::NAN),
            max_ms: samples_ms.last().copied().unwrap_or(f64::NAN),
            samples_ms,
        }
    }
}

impl Gpu {
    /// Times `op` on the GPU: `warmup` untimed calls, then `repeats` timed ones. `op` receives the call's index so it
    /// can rotate among several input sets (then the inputs are not all sitting in L2 and flattering the numbers).
    pub fn time<F>(&self, warmup: usize, repeats: usize, mut op: F) -> Result<Timing, GpuError>
    where
        F: FnMut(usize) -> Result<(), GpuError>,
    {
        for i in 0..warmup {
            op(i)?;
        }
        let ctx = self.context();
        let events = (0..repeats)
            .map(|_| {
                Ok((
                    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                    ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
                ))
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        for (i, (start, end)) in events.iter().enumerate() {
            start.record(self.stream())?;
            op(warmup + i)?;
            end.record(self.stream())?;
        }
        self.synchronize()?;
        let samples = events
            .iter()
            .map(|(s, e)| Ok(s.elapsed_ms(e)? as f64))
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(Timing::from_samples(samples))
    }
}

impl Gpu {
    /// Times `launches` calls of `op` captured once into a CUDA graph and replayed: `warmup` untimed replays, then
    /// `repeats` replays each bracketed by its own pair of events. Returns milliseconds per replay (all `launches`
    /// calls). A replay costs GPU time only — no per-launch CPU work — so microsecond kernels are timed as an engine
    /// that replays its steps as graphs runs them, not at the rate the host can launch them.
    ///
    /// `op` receives the call's index in the graph (rotate inputs with it). It must only enqueue work on this
    /// GPU's stream (no host copies, no synchronisation): anything else fails the capture, which is then ended and
    /// the error returned.
    pub fn time_graph<F>(&self, launches: usize, warmup: usize, repeats: usize, mut op: F) -> Result<Timing, GpuError>
    where
        F: FnMut(usize) -> Result<(), GpuError>,
    {
        self.begin_capture()?;
        let captured = (0..launches).try_for_each(&mut op);
        let graph = self.end_capture(captured)?;
        self.time(warmup, repeats, |_| graph.launch())
    }
}

/// A pair of CUDA events around work issued on the GPU's stream: how long the GPU took for it, read once the
/// stream has passed the second event.
pub struct Stopwatch {
    start: cudarc::driver::CudaEvent,
    end: cudarc::driver::CudaEvent,
}

impl Gpu {
    pub fn stopwatch(&self) -> Result<Stopwatch, GpuError> {
        let ctx = self.context();
        Ok(Stopwatch {
            start: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
            end: ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
        })
    }
}

impl Stopwatch {
    /// Marks the start on `gpu`'s stream.
    pub fn start(&self, gpu: &Gpu) -> Result<(), GpuError> {
        Ok(self.start.record(gpu.stream())?)
    }

    /// Marks the end on `gpu`'s stream.
    pub fn stop(&self, gpu: &Gpu) -> Result<(), GpuError> {
        Ok(self.end.record(gpu.stream())?)
    }

    /// Milliseconds between the marks (waits for the second).
    pub fn elapsed_ms(&self) -> Result<f64, GpuError> {
        Ok(f64::from(self.start.elapsed_ms(&self.end)?))
    }
}

/// Work captured from the GPU's stream, replayed by [`Graph::launch`] with the same arguments (buffers included:
/// they must outlive it and stay where they are).
pub struct Graph {
    graph: cudarc::driver::CudaGraph,
}

impl Graph {
    pub fn launch(&self) -> Result<(), GpuError> {
        Ok(self.graph.launch()?)
    }
}

impl Gpu {
    /// Starts recording what is issued on the stream instead of running it. Allocations are allowed meanwhile
    /// (relaxed mode), but nothing may wait on the stream or copy from the host until [`Gpu::end_capture`].
    pub fn begin_capture(&self) -> Result<(), GpuError> {
        use cudarc::driver::sys::CUstreamCaptureMode;
        Ok(self
            .stream()
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?)
    }

    /// Ends the capture begun by [`Gpu::begin_capture`] — always, so the stream is usable again — and returns the
    /// graph, or `issued`'s error if issuing the work failed.
    pub fn end_capture(&self, issued: Result<(), GpuError>) -> Result<Graph, GpuError> {
        use cudarc::driver::sys::CUgraphInstantiate_flags;
        let graph = self.stream().end_capture(CUgraphInstantiate_flags(0));
        issued?;
        let Some(graph) = graph? else {
            return Err(GpuError::shape("capture", "the capture recorded no work"));
        };
        graph.upload()?;
        Ok(Graph { graph })
    }
}
