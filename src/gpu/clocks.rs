//! The GPU's SM clock while work runs, sampled through NVML (`libnvidia-ml.so.1`, loaded at run time as the CUDA
//! libraries are: nothing to link, and its absence is an error, not a crash).
//!
//! A card runs its kernels at the SM clock its power management allows: an H200 under sustained prefill-heavy
//! load was seen holding itself down (NVML's "SW power cap") from 1,980 MHz to 1,605-1,710 MHz for tens of seconds.
//! A [`ClockSampler`] reads the clock every few milliseconds on its own thread, so that what a measurement ran at
//! is on record beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libloading::{Library, Symbol};

/// NVML's `NVML_CLOCK_SM`.
const NVML_CLOCK_SM: u32 = 1;
/// `nvmlClocksEventReasons` bits that say the clock was held down: SW power cap, HW slowdown, SW and HW thermal
/// slowdown, HW power brake.
pub const SLOWDOWN_REASONS: u64 = 0x4 | 0x8 | 0x20 | 0x40 | 0x80;

type NvmlDevice = *mut std::ffi::c_void;

/// One reading of the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// When it was read, from the sampler's start.
    pub at: Duration,
    pub sm_mhz: u32,
    /// NVML's current clocks event reasons (a bit mask; see [`SLOWDOWN_REASONS`]).
    pub reasons: u64,
}

impl ClockSample {
    /// Whether power or thermal management held the clock down when it was read.
    pub fn slowed(&self) -> bool {
        self.reasons & SLOWDOWN_REASONS != 0
    }
}

/// What a sampler read, in time order.
#[derive(Clone, Debug)]
pub struct ClockTrace {
    start: Instant,
    pub samples: Vec<ClockSample>,
}

impl ClockTrace {
    /// A trace of `samples` taken from `start` on (for tests and for traces read back).
    pub fn new(start: Instant, samples: Vec<ClockSample>) -> Self {
        Self { start, samples }
    }

    /// The samples read within `[from, to)`.
    pub fn between(&self, from: Instant, to: Instant) -> impl Iterator<Item = &ClockSample> {
        let (a, b) = (
            from.saturating_duration_since(self.start),
            to.saturating_duration_since(self.start),
        );
        self.samples.iter().filter(move |x| a <= x.at && x.at < b)
    }

    /// The sample nearest to the middle of `[from, to]`, if any was read within `tolerance` of it.
    pub fn at(&self, from: Instant, to: Instant, tolerance: Duration) -> Option<ClockSample> {
        let mid = from.checked_duration_since(self.start)? + to.saturating_duration_since(from) / 2;
        let i = self.samples.partition_point(|s| s.at < mid);
        let near = |j: usize| self.samples.get(j).map(|s| (s.at.abs_diff(mid), *s));
        [i.checked_sub(1).and_then(near), near(i)]
            .into_iter()
            .flatten()
            .filter(|(d, _)| *d <= tolerance)
            .min_by_key(|(d, _)| *d)
            .map(|(_, s)| s)
    }
}

/// Reads the SM clock of one GPU every `every` on a thread of its own until it is dropped or
/// [`ClockSampler::finish`]ed. Start it before the work to be watched: loading and initialising NVML and the
/// thread's first reading cost milliseconds of host time, which a step measured at that moment would carry.
pub struct ClockSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<ClockSample>>>,
    start: Instant,
}

impl ClockSampler {
    /// Starts sampling the GPU with CUDA UUID `uuid` (NVML and CUDA may number devices differently; the UUID names
    /// the same card in both). Fails, with the reason, where NVML cannot be loaded or does not know the card.
    pub fn start(uuid: [u8; 16], every: Duration) -> Result<Self, String> {
        let nvml = Nvml::open(uuid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let (flag, out) = (stop.clone(), samples.clone());
        let thread = std::thread::Builder::new()
            .name("sm-clock".into())
            .spawn(move || {
                // Never on the core of the thread issuing GPU work (it inherits that thread's pin).
                super::affinity::keep_off_issuing_core();
                while !flag.load(Ordering::Relaxed) {
                    if let Some((sm_mhz, reasons)) = nvml.read() {
                        let sample = ClockSample {
                            at: start.elapsed(),
                            sm_mhz,
                            reasons,
                        };
                        out.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
                    }
                    std::thread::sleep(every);
                }
            })
            .map_err(|e| format!("cannot start the clock sampler: {e}"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            samples,
            start,
        })
    }

    /// What was read so far; sampling goes on.
    pub fn trace(&self) -> ClockTrace {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ClockTrace::new(self.start, samples)
    }

    /// Stops sampling and returns what was read.
    pub fn finish(mut self) -> ClockTrace {
        self.join();
        self.trace()
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClockSampler {
    fn drop(&mut self) {
        self.join();
    }
}

type ClockInfoFn = unsafe extern "C" fn(NvmlDevice, u32, *mut u32) -> i32;
type EventReasonsFn = unsafe extern "C" fn(NvmlDevice, *mut u64) -> i32;

/// NVML, loaded, initialised, with the handle of one device and the two functions a reading calls (looked up once;
/// `None` where this NVML lacks one).
struct Nvml {
    lib: Library,
    device: NvmlDevice,
    clock_info: Option<ClockInfoFn>,
    event_reasons: Option<EventReasonsFn>,
}

// SAFETY: NVML is thread-safe (its documentation: "all NVML calls are thread-safe"); the device handle is an opaque
// token NVML hands out for use from any thread. The sampler thread is the only user after `open`.
unsafe impl Send for Nvml {}

impl Nvml {
    fn open(uuid: [u8; 16]) -> Result<Nvml, String> {
        // SAFETY: loading libnvidia-ml runs no code of ours; its initialisers are the driver's own.
        let lib = unsafe { Library::new("libnvidia-ml.so.1") }.map_err(|e| format!("NVML is not available: {e}"))?;
        let name = std::ffi::CString::new(uuid_string(uuid)).expect("no NUL in a formatted UUID");
        // SAFETY: the symbols have NVML's documented C signatures (nvml.h): nvmlInit_v2(void),
        // nvmlDeviceGetHandleByUUID(const char*, nvmlDevice_t*), nvmlDeviceGetClockInfo(nvmlDevice_t,
        // nvmlClockType_t, unsigned int*), nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t, unsigned long long*);
        // the function pointers are used only while `lib` (moved into the returned value, never unloaded before it)
        // is loaded.
        let (init, by_uuid, clock_info, event_reasons) = unsafe {
            let init: Symbol<unsafe extern "C" fn() -> i32> = lib.get(b"nvmlInit_v2\0").map_err(|e| e.to_string())?;
            let by_uuid: Symbol<unsafe extern "C" fn(*const std::ffi::c_char, *mut NvmlDevice) -> i32> =
                lib.get(b"nvmlDeviceGetHandleByUUID\0").map_err(|e| e.to_string())?;
            let clock_info = lib.get::<ClockInfoFn>(b"nvmlDeviceGetClockInfo\0").ok().map(|f| *f);
            let event_reasons = (lib
                .get::<EventReasonsFn>(b"nvmlDeviceGetCurrentClocksEventReasons\0")
                .ok())
            .map(|f| *f);
            (*init, *by_uuid, clock_info, event_reasons)
        };
        // SAFETY: as above; no arguments.
        match unsafe { init() } {
            0 => {}
            code => return Err(format!("nvmlInit failed (NVML error {code})")),
        }
        // Initialised: from here on, dropping `nvml` shuts NVML down again, on every path.
        let mut nvml = Nvml {
            lib,
            device: std::ptr::null_mut(),
            clock_info,
            event_reasons,
        };
        // SAFETY: `name` is NUL-terminated and outlives the call; `nvml.device` is valid for one write.
        match unsafe { by_uuid(name.as_ptr(), &mut nvml.device) } {
            0 => Ok(nvml),
            code => Err(format!("NVML does not know the GPU {name:?} (NVML error {code})")),
        }
    }

    /// The SM clock (MHz) and the clocks event reasons, or `None` if NVML fails to say.
    fn read(&self) -> Option<(u32, u64)> {
        let mut mhz = 0u32;
        let mut reasons = 0u64;
        let clock_info = self.clock_info?;
        // SAFETY: the functions were looked up in `self.lib`, still loaded, with their documented signatures (see
        // `open`); the handle came from nvmlDeviceGetHandleByUUID and NVML stays initialised while `self` lives; the
        // out-pointers are valid for one write each.
        unsafe {
            if clock_info(self.device, NVML_CLOCK_SM, &mut mhz) != 0 {
                return None;
            }
            if let Some(events) = self.event_reasons
                && events(self.device, &mut reasons) != 0
            {
                reasons = 0;
            }
        }
        Some((mhz, reasons))
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: nvmlShutdown(void), balancing the nvmlInit of `open`.
        unsafe {
            if let Ok(shutdown) = self.lib.get::<unsafe extern "C" fn() -> i32>(b"nvmlShutdown\0") {
                shutdown();
            }
        }
    }
}

/// A CUDA UUID as NVML (and `nvidia-smi -L`) writes it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub(crate) fn uuid_string(u: [u8; 16]) -> String {
    let hex = |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_written_as_nvml_writes_them() {
        let u = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
        ];
        assert_eq!(uuid_string(u), "GPU-01234567-89ab-cdef-1032-547698badcfe");
    }

    #[test]
    fn a_step_gets_the_sample_nearest_its_middle_within_the_tolerance() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let sample = |at: u64, mhz: u32| ClockSample {
            at: ms(at),
            sm_mhz: mhz,
            reasons: if mhz < 1980 { 0x4 } else { 0 },
        };
        let trace = ClockTrace::new(start, vec![sample(0, 1980), sample(10, 1710), sample(20, 1665)]);
        // A step from 2 to 10 ms: middle 6 ms, nearest sample at 10 ms.
        let got = trace.at(start + ms(2), start + ms(10), ms(5)).unwrap();
        assert_eq!(got.sm_mhz, 1710);
        assert!(got.slowed());
        // From 0 to 4 ms: middle 2, nearest 0.
        assert_eq!(trace.at(start, start + ms(4), ms(5)).unwrap().sm_mhz, 1980);
        // Past the last sample by more than the tolerance: none.
        assert!(trace.at(start + ms(40), start + ms(44), ms(5)).is_none());
        // The samples of a span.
        let within: Vec<u32> = trace.between(start + ms(5), start + ms(20)).map(|s| s.sm_mhz).collect();
        assert_eq!(within, vec![1710]);
        // A trace that read nothing knows nothing.
        assert!(
            ClockTrace::new(start, Vec::new())
                .at(start, start + ms(1), ms(5))
                .is_none()
        );
    }
}
