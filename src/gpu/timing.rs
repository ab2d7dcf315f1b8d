//! Timing with CUDA events: warm-up runs first (module load, caches, clocks), then each repeat bracketed by its own
//! pair of events, summarised by the median (robust to the odd preempted run).

use std::sync::Arc;

use cudarc::driver::sys::{self, CUevent_flags};
use cudarc::driver::{CudaStream, result};

use super::kernels::KernelId;
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
        let graph = self.end_capture(captured, Succession::Serial)?;
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
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: Arc<CudaStream>,
    programmatic: usize,
    /// The decode attention launches (tensor-core kernel, which reads its split from the device) as captured, and
    /// the partitions (grid z) the executable graph launches them with now: [`Graph::set_partitions`].
    partitioned: Vec<(sys::CUgraphNode, sys::CUDA_KERNEL_NODE_PARAMS)>,
    partitions: u32,
}

/// How the kernels of a captured graph follow one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// Each kernel launches once the one before it has finished (what the stream order says).
    Serial,
    /// Programmatic dependent launch (sm_90+): where one of our kernels follows another, it may launch while that
    /// one still runs, load what no kernel writes (weights) and wait in the kernel for its inputs (`pdl_wait` in
    /// kernels/common.cuh). A graph that also holds library (cuBLAS) kernels stays serial: the driver refused
    /// programmatic edges in such graphs on an H100. On GPUs before sm_90 the same as `Serial`.
    Programmatic,
}

impl Graph {
    pub fn launch(&self) -> Result<(), GpuError> {
        self.stream.context().bind_to_thread()?;
        // SAFETY: `exec` was instantiated from this graph and is destroyed only on drop; the stream outlives it.
        unsafe { result::graph::launch(self.exec, self.stream.cu_stream()) }?;
        Ok(())
    }

    /// How many kernel-to-kernel edges were made programmatic.
    pub fn programmatic_edges(&self) -> usize {
        self.programmatic
    }

    /// Launches the graph's decode attention with a grid of `parts` context partitions from now on, instead of the
    /// most it was captured for. The kernel reads the step's own split from the device and its blocks beyond it
    /// return at once, so any count from the step's split up to the captured one computes the same; but those idle
    /// blocks cost time (measured on an H100, 2026-12-06: qwen2.5-1.5b's one-sequence decode step 25-55 µs slower
    /// with graphs captured for contexts up to 5,132 tokens than up to 1,512), so a step launches exactly its own.
    /// Changes the executable graph only when the count differs from the last one set.
    pub fn set_partitions(&mut self, parts: u32) -> Result<(), GpuError> {
        if parts == self.partitions || self.partitioned.is_empty() {
            return Ok(());
        }
        self.stream.context().bind_to_thread()?;
        for (node, params) in &self.partitioned {
            let mut p = *params;
            p.gridDimZ = parts;
            // SAFETY: `node` is a kernel node of the graph `exec` was instantiated from (both alive until drop), and
            // `params` are its own as the driver described them (its argument array is owned by the node, alive
            // with the graph); only the grid changes, which the driver allows on an instantiated graph.
            unsafe { sys::cuGraphExecKernelNodeSetParams_v2(self.exec, *node, &p) }.result()?;
        }
        self.partitions = parts;
        Ok(())
    }

    /// The partitions the decode attention launches with now ([`Graph::set_partitions`]); `None` without one.
    pub fn partitions(&self) -> Option<u32> {
        (!self.partitioned.is_empty()).then_some(self.partitions)
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let ctx = self.stream.context();
        // SAFETY: both handles were created by `end_capture` and are destroyed once, here; a launch still running
        // keeps its own reference to the executable graph (the driver defers the release).
        unsafe {
            ctx.record_err(result::graph::exec_destroy(self.exec));
            ctx.record_err(result::graph::destroy(self.graph));
        }
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
    /// graph, its kernels following each other as `succession` says, or `issued`'s error if issuing the work failed.
    pub fn end_capture(&self, issued: Result<(), GpuError>, succession: Succession) -> Result<Graph, GpuError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: the stream is ours and was capturing (begin_capture); ending a capture hands us the graph.
        let graph = unsafe { result::stream::end_capture(self.stream.cu_stream()) };
        if let Ok(g) = &graph
            && !g.is_null()
            && issued.is_err()
        {
            // SAFETY: the graph was just created and nothing else holds it.
            unsafe { self.ctx.record_err(result::graph::destroy(*g)) };
        }
        issued?;
        let graph = graph?;
        if graph.is_null() {
            return Err(GpuError::shape("capture", "the capture recorded no work"));
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            // SAFETY: `graph` is a valid graph we own.
            if let Ok(census) = unsafe { node_census(graph) } {
                tracing::debug!(?census, "graph captured: nodes by type");
            }
        }
        let edges = match succession {
            Succession::Programmatic if self.info.compute_capability.0 >= 9 => {
                // SAFETY: `graph` is a valid graph we own; the kernels' functions are alive in our modules.
                unsafe { kernel_edges(graph, &self.kernels) }
            }
            _ => Ok(Vec::new()),
        };
        // SAFETY: `graph` is ours alone until it is destroyed here or handed to the Graph below.
        let built = edges.and_then(|edges| unsafe { instantiate_programmatic(graph, &edges) });
        let (exec, programmatic) = match built {
            Ok(b) => b,
            Err(e) => {
                // SAFETY: as above, the graph is ours alone.
                unsafe { self.ctx.record_err(result::graph::destroy(graph)) };
                return Err(e);
            }
        };
        let decode =
            [KernelId::AttnDecodeTcD64F16, KernelId::AttnDecodeTcD128F16].map(|k| self.kernels.get(k).cu_function());
        // SAFETY: `graph` is a valid graph we own (handed to the Graph below, which keeps it alive with its nodes).
        let partitioned = match unsafe { kernel_nodes_of(graph, &decode) } {
            Ok(nodes) => nodes,
            Err(e) => {
                // SAFETY: as above; nothing else holds these handles.
                unsafe {
                    self.ctx.record_err(result::graph::exec_destroy(exec));
                    self.ctx.record_err(result::graph::destroy(graph));
                }
                return Err(e);
            }
        };
        let partitions = partitioned.first().map_or(0, |(_, p)| p.gridDimZ);
        let g = Graph {
            graph,
            exec,
            stream: self.stream.clone(),
            programmatic,
            partitioned,
            partitions,
        };
        // SAFETY: `exec` is valid, on our stream.
        unsafe { result::graph::upload(g.exec, self.stream.cu_stream()) }?;
        Ok(g)
    }
}

/// How many nodes of each type `graph` holds, as (type, count) for the types present.
///
/// # Safety
/// `graph` must be a valid graph not in use by any other thread.
unsafe fn node_census(graph: sys::CUgraph) -> Result<Vec<(String, usize)>, GpuError> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    // SAFETY: the caller hands a valid graph, used by no other thread.
    for (_, kind) in unsafe { typed_nodes(graph) }? {
        let name = format!("{kind:?}");
        match counts.iter_mut().find(|c| c.0 == name) {
            Some(c) => c.1 += 1,
            None => counts.push((name, 1)),
        }
    }
    Ok(counts)
}

/// Every node of `graph` with its type, in the driver's order.
///
/// # Safety
/// `graph` must be a valid graph not in use by any other thread.
unsafe fn typed_nodes(graph: sys::CUgraph) -> Result<Vec<(sys::CUgraphNode, sys::CUgraphNodeType)>, GpuError> {
    let mut n = 0usize;
    // SAFETY (this block): the caller hands a valid graph; the array holds `n` entries as the driver asked for.
    unsafe {
        sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n).result()?;
        let mut nodes = vec![std::ptr::null_mut(); n];
        sys::cuGraphGetNodes(graph, nodes.as_mut_ptr(), &mut n).result()?;
        nodes.truncate(n);
        nodes.into_iter().map(|node| Ok((node, node_type(node)?))).collect()
    }
}

/// A node's type as the driver gives it.
///
/// # Safety
/// `node` must be a node of a valid graph not in use by any other thread.
unsafe fn node_type(node: sys::CUgraphNode) -> Result<sys::CUgraphNodeType, GpuError> {
    let mut kind = sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
    // SAFETY: the caller hands a valid node; `kind` is valid for one write.
    unsafe { sys::cuGraphNodeGetType(node, &mut kind) }.result()?;
    Ok(kind)
}

/// Whether `node` is a kernel node (`false` where the driver will not say).
///
/// # Safety
/// As [`node_type`].
unsafe fn is_kernel(node: sys::CUgraphNode) -> bool {
    // SAFETY: as the caller's.
    unsafe { node_type(node) }.is_ok_and(|k| k == sys::CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL)
}

/// A kernel node's parameters as the driver describes them; `None` for another kind of node or a kernel the driver
/// will not describe (a library's).
///
/// # Safety
/// `node` must be a node of a valid graph not in use by any other thread.
unsafe fn kernel_params(node: sys::CUgraphNode) -> Option<sys::CUDA_KERNEL_NODE_PARAMS> {
    // SAFETY (this block): the caller hands a valid node; its parameters are read only if it is a kernel node.
    unsafe {
        if !is_kernel(node) {
            return None;
        }
        let mut params = std::mem::zeroed::<sys::CUDA_KERNEL_NODE_PARAMS>();
        sys::cuGraphKernelNodeGetParams_v2(node, &mut params).result().ok()?;
        Some(params)
    }
}

/// The default (full-completion) edges of `graph` between two of our kernels, in the driver's order.
///
/// # Safety
/// `graph` must be a valid graph not in use by any other thread.
unsafe fn kernel_edges(graph: sys::CUgraph, kernels: &super::Kernels) -> Result<Vec<Edge>, GpuError> {
    use std::ptr::null_mut;
    let mut n = 0usize;
    // SAFETY (this block): the caller hands a valid graph; each array holds `n` entries as the driver asked for.
    unsafe {
        sys::cuGraphGetEdges_v2(graph, null_mut(), null_mut(), null_mut(), &mut n).result()?;
        let mut from = vec![null_mut(); n];
        let mut to = vec![null_mut(); n];
        let mut data = vec![std::mem::zeroed::<sys::CUgraphEdgeData>(); n];
        sys::cuGraphGetEdges_v2(graph, from.as_mut_ptr(), to.as_mut_ptr(), data.as_mut_ptr(), &mut n).result()?;
        // A kernel the driver will not describe (a library's) is not ours.
        let ours = |node: sys::CUgraphNode| kernel_params(node).is_some_and(|p| kernels.is_ours(p.func));
        // On an H100 (driver 580) the driver refused every programmatic edge of a graph that also held cuBLAS
        // kernels: such a graph stays serial.
        let foreign = (0..n.min(from.len()))
            .flat_map(|i| [from[i], to[i]])
            .any(|node| is_kernel(node) && !ours(node));
        if foreign {
            tracing::debug!("a decode graph with library kernels runs its kernels serially");
            return Ok(Vec::new());
        }
        let default = sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT as u8;
        Ok((0..n.min(from.len()))
            .filter(|&i| data[i].type_ == default && data[i].from_port == 0 && ours(from[i]) && ours(to[i]))
            .map(|i| Edge {
                from: from[i],
                to: to[i],
            })
            .collect())
    }
}

/// The kernel nodes of `graph` launching one of `funcs`, with their parameters as the driver describes them.
///
/// # Safety
/// `graph` must be a valid graph not in use by any other thread.
unsafe fn kernel_nodes_of(
    graph: sys::CUgraph,
    funcs: &[sys::CUfunction],
) -> Result<Vec<(sys::CUgraphNode, sys::CUDA_KERNEL_NODE_PARAMS)>, GpuError> {
    // SAFETY: the caller hands a valid graph, used by no other thread; its nodes are valid with it.
    let nodes = unsafe { typed_nodes(graph) }?;
    Ok(nodes
        .into_iter()
        // SAFETY: as above.
        .filter_map(|(node, _)| unsafe { kernel_params(node) }.map(|p| (node, p)))
        .filter(|(_, p)| funcs.contains(&p.func))
        .collect())
}

/// A kernel-to-kernel edge of a graph.
#[derive(Clone, Copy)]
struct Edge {
    from: sys::CUgraphNode,
    to: sys::CUgraphNode,
}

/// Makes `edges` programmatic (or default again) in `graph`.
///
/// # Safety
/// `graph` must be valid and hold these edges with the other type, used by no other thread.
unsafe fn retype(graph: sys::CUgraph, edges: &[Edge], programmatic: bool) -> Result<(), GpuError> {
    let full = sys::CUgraphEdgeData {
        from_port: 0,
        to_port: 0,
        type_: sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_DEFAULT as u8,
        reserved: [0; 5],
    };
    let early = sys::CUgraphEdgeData {
        from_port: sys::CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC as u8,
        to_port: 0,
        type_: sys::CUgraphDependencyType::CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC as u8,
        reserved: [0; 5],
    };
    let (old, new) = if programmatic { (full, early) } else { (early, full) };
    // SAFETY (this block): the caller's graph holds each edge as `old`; it is replaced by `new` between the same
    // nodes. Should the driver refuse one, that edge and those before it get their old type back, so the graph is
    // as it was.
    unsafe {
        let swap = |e: &Edge, from: &sys::CUgraphEdgeData, to: &sys::CUgraphEdgeData| -> Result<(), GpuError> {
            sys::cuGraphRemoveDependencies_v2(graph, &e.from, &e.to, from, 1).result()?;
            if let Err(err) = sys::cuGraphAddDependencies_v2(graph, &e.from, &e.to, to, 1).result() {
                sys::cuGraphAddDependencies_v2(graph, &e.from, &e.to, from, 1).result()?;
                return Err(err.into());
            }
            Ok(())
        };
        for (i, e) in edges.iter().enumerate() {
            if let Err(err) = swap(e, &old, &new) {
                for done in &edges[..i] {
                    swap(done, &new, &old)?;
                }
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Instantiates `graph` with as many of `edges` (a prefix, in order) programmatic as the driver accepts: all of them
/// normally; where it refuses, the longest prefix it takes (found by halving), with a warning saying why. Returns
/// the executable graph and the number of programmatic edges.
///
/// # Safety
/// `graph` must be valid, hold `edges` as default edges, and be used by no other thread.
unsafe fn instantiate_programmatic(graph: sys::CUgraph, edges: &[Edge]) -> Result<(sys::CUgraphExec, usize), GpuError> {
    // SAFETY (this function): per the caller's promise; every retype is undone before the next attempt.
    let attempt = |k: usize| -> Result<sys::CUgraphExec, GpuError> {
        unsafe {
            retype(graph, &edges[..k], true)?;
            match result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) {
                Ok(exec) => Ok(exec),
                Err(e) => {
                    retype(graph, &edges[..k], false)?;
                    Err(e.into())
                }
            }
        }
    };
    let first = match attempt(edges.len()) {
        Ok(exec) => return Ok((exec, edges.len())),
        Err(e) => e,
    };
    // Largest k that instantiates, assuming fewer programmatic edges never make it fail.
    let (mut ok, mut bad) = (0usize, edges.len());
    while bad - ok > 1 {
        let mid = (ok + bad) / 2;
        match attempt(mid) {
            Ok(exec) => {
                unsafe {
                    result::graph::exec_destroy(exec)?;
                    retype(graph, &edges[..mid], false)?;
                }
                ok = mid;
            }
            Err(_) => bad = mid,
        }
    }
    tracing::warn!(
        error = %first,
        edges = edges.len(),
        accepted = ok,
        "the driver refused a decode graph with every kernel edge programmatic: only the first {ok} of {} are",
        edges.len()
    );
    Ok((attempt(ok)?, ok))
}
