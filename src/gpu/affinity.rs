//! Which CPU core issues the GPU's work.
//!
//! An eager engine step (a prefill or a mixed step) is hundreds of kernel launches, and on a small model its time is
//! the host's time to issue them, which depends on the core the issuing thread runs on. On a machine with several
//! NUMA nodes a core near the GPU is the obvious choice; `--cpu` pins the thread (to a given core, or with `auto`
//! to the core near the GPU from which it issues launches fastest, measured at start-up) and keeps batchlab's
//! helper threads (the SM-clock sampler) off that core.
//!
//! It is off by default, because on the H100 machines we measure on (16 vCPUs of a KVM guest, one NUMA node;
//! 2026-12-06) it did not make predictions better. Per core the host took 3.2–4.8 µs to issue a launch, and which
//! core was fastest changed from one process to the next; a lone 64-token prefill of qwen2.5-0.5b took 0.84–0.95 ms
//! to issue from most single cores and 1.10–1.24 ms from cores 0 and 15 or unpinned on one machine start, while on
//! the next core 1 (the fastest before) took 1.18 ms and the unpinned thread 0.98 ms. Calibrated and validated
//! pinned, the seed matrix's eager steps' issue time was predicted within 2.6% at the median, but from run to run
//! that prefill's issue still ranged from 1.5 to 2.3 ms, as unpinned, and calibration ran 8–20% longer (reports/
//! README.md has the numbers).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the thread that issues GPU work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueCpu {
    /// The CPU, of those near the GPU that this process may use, from which the host issues launches fastest.
    Auto,
    /// This CPU.
    Core(usize),
    /// Wherever the OS schedules it.
    Free,
}

impl std::str::FromStr for IssueCpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::Free),
            n => n.parse().map(Self::Core).map_err(|_| {
                format!("expected a CPU number, `auto` (a core near the GPU) or `none` (not pinned), got `{n}`")
            }),
        }
    }
}

/// The core the issuing thread was pinned to (`usize::MAX`: none).
static PINNED: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The CPUs the issuing thread was allowed before it was pinned: where helper threads go.
static BEFORE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The core [`pin_issuing_thread`] pinned the issuing thread to, if it did.
pub fn issuing_core() -> Option<usize> {
    match PINNED.load(Ordering::Relaxed) {
        usize::MAX => None,
        c => Some(c),
    }
}

/// Parses a Linux CPU list ("0-7,16-23", "3").
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("not a CPU list: `{}`", s.trim());
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// The cores `auto` tries: the allowed CPUs near the GPU (all allowed CPUs where none is known to be near it, or
/// none of those near it is allowed).
pub fn candidates(allowed: &[usize], near_gpu: Option<&[usize]>) -> Vec<usize> {
    let near: Vec<usize> = match near_gpu {
        Some(near) => allowed.iter().copied().filter(|c| near.contains(c)).collect(),
        None => Vec::new(),
    };
    if near.is_empty() { allowed.to_vec() } else { near }
}

/// The CPUs near the PCI device `bus_id` ("0000:19:00.0"), as sysfs lists them.
fn near_cpus(bus_id: &str) -> Option<Vec<usize>> {
    let path = format!("/sys/bus/pci/devices/{}/local_cpulist", bus_id.to_lowercase());
    parse_cpu_list(&std::fs::read_to_string(path).ok()?).ok()
}

/// Where the issuing thread was pinned, and why there.
#[derive(Clone, Debug, PartialEq)]
pub struct Pinned {
    pub core: usize,
    /// With `auto`: the host's time to issue one kernel launch from each candidate core (µs), as measured.
    pub launch_us: Vec<(usize, f64)>,
}

impl Pinned {
    /// One line for the user.
    pub fn describe(&self) -> String {
        let of = |c: usize| self.launch_us.iter().find(|p| p.0 == c).map(|p| p.1);
        let slowest = self.launch_us.iter().map(|p| p.1).fold(f64::NAN, f64::max);
        match of(self.core) {
            Some(us) if self.launch_us.len() > 1 => format!(
                "the thread issuing GPU work is pinned to CPU {}, the fastest of {} near the GPU at issuing kernel \
                 launches ({us:.2} µs each; the slowest {slowest:.2} µs)",
                self.core,
                self.launch_us.len()
            ),
            _ => format!("the thread issuing GPU work is pinned to CPU {}", self.core),
        }
    }
}

/// Pins the calling thread (the one that will issue the GPU's work) as `choice` says. `bus_id` is the GPU's PCI
/// address, to find the CPUs near it; `launch_us` measures, on the core the thread is on, the host's time to issue
/// one launch. `auto` tries every allowed CPU near the GPU and keeps the fastest: which core issues fastest differs
/// between machines (one that takes interrupts, or that the hypervisor shares, is slower): core 1 was the fastest
/// on one H100 machine and among the slowest on the next.
pub fn pin_issuing_thread(
    choice: IssueCpu,
    bus_id: Option<&str>,
    launch_us: &mut dyn FnMut() -> Result<f64, String>,
) -> Result<Option<Pinned>, String> {
    let core = match choice {
        IssueCpu::Free => return Ok(None),
        IssueCpu::Core(c) => Some(c),
        IssueCpu::Auto => None,
    };
    // The CPUs this process may run on (helper threads move onto the others: `keep_off_issuing_core`).
    let allowed = sys::allowed()?;
    let pinned = match core {
        Some(c) if allowed.contains(&c) => {
            sys::set(&[c])?;
            Pinned {
                core: c,
                launch_us: Vec::new(),
            }
        }
        Some(c) => {
            return Err(format!(
                "--cpu {c}: this process may run on CPUs {} only",
                allowed.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            ));
        }
        None => {
            let near = bus_id.and_then(near_cpus);
            let mut tried = Vec::new();
            for c in candidates(&allowed, near.as_deref()) {
                let measured = sys::set(&[c]).and_then(|()| launch_us());
                match measured {
                    Ok(us) => tried.push((c, us)),
                    Err(e) => {
                        // Not left on whichever core was being tried.
                        let _ = sys::set(&allowed);
                        return Err(format!("timing launches from CPU {c}: {e}"));
                    }
                }
            }
            let Some(&(core, _)) = tried.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else {
                return Ok(None);
            };
            sys::set(&[core])?;
            Pinned { core, launch_us: tried }
        }
    };
    *BEFORE.lock().unwrap_or_else(|e| e.into_inner()) = allowed;
    PINNED.store(pinned.core, Ordering::Relaxed);
    tracing::info!(
        core = pinned.core,
        "the thread issuing GPU work is pinned to one CPU core"
    );
    Ok(Some(pinned))
}

/// For a helper thread started after [`pin_issuing_thread`] (it inherits the pin): moves it onto the other CPUs the
/// process may use, so that it never takes the issuing thread's core. Does nothing where nothing was pinned or no
/// other CPU is allowed.
pub fn keep_off_issuing_core() {
    let Some(core) = issuing_core() else {
        return;
    };
    let before = BEFORE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let others: Vec<usize> = before.into_iter().filter(|&c| c != core).collect();
    if !others.is_empty() {
        let _ = sys::set(&others);
    }
}

#[cfg(target_os = "linux")]
mod sys {
    /// The CPUs the calling thread may run on.
    pub fn allowed() -> Result<Vec<usize>, String> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size into it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(format!("sched_getaffinity: {}", std::io::Error::last_os_error()));
            }
            Ok((0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect())
        }
    }

    /// Restricts the calling thread to `cpus`.
    pub fn set(cpus: &[usize]) -> Result<(), String> {
        // SAFETY: as in `allowed`; CPU_SET is given indices below CPU_SETSIZE only; sched_setaffinity reads the set.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
                libc::CPU_SET(c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(format!("sched_setaffinity: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    pub fn allowed() -> Result<Vec<usize>, String> {
        Err("pinning a thread to a CPU is implemented for Linux only".into())
    }
    pub fn set(_: &[usize]) -> Result<(), String> {
        allowed().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pin is process-wide state: the tests that pin take turns.
    static PINNING: Mutex<()> = Mutex::new(());

    #[test]
    fn cpu_lists_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }

    #[test]
    fn auto_tries_the_allowed_cpus_near_the_gpu() {
        let allowed: Vec<usize> = (0..32).collect();
        let near: Vec<usize> = (16..32).collect();
        assert_eq!(candidates(&allowed, Some(&near)), near);
        assert_eq!(candidates(&allowed, None), allowed);
        // None near the GPU is allowed: the allowed ones.
        assert_eq!(candidates(&[2, 3], Some(&near)), vec![2, 3]);
    }

    #[test]
    fn the_choice_parses_from_the_command_line() {
        assert_eq!("auto".parse::<IssueCpu>(), Ok(IssueCpu::Auto));
        assert_eq!("none".parse::<IssueCpu>(), Ok(IssueCpu::Free));
        assert_eq!("3".parse::<IssueCpu>(), Ok(IssueCpu::Core(3)));
        assert!("x".parse::<IssueCpu>().unwrap_err().contains("`x`"));
    }

    #[test]
    fn a_pinned_thread_runs_on_its_core_and_a_helper_moves_off_it() {
        let _turn = PINNING.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = sys::allowed().unwrap();
        if allowed.len() < 2 {
            eprintln!("skipped: this process may run on one CPU only, no other to move a helper to");
            return;
        }
        // In a thread of its own, so the test harness's other threads are not pinned.
        std::thread::spawn(move || {
            let core = pin_issuing_thread(IssueCpu::Core(allowed[1]), None, &mut || Ok(1.0)).unwrap();
            assert_eq!(core.map(|p| p.core), Some(allowed[1]));
            assert_eq!(sys::allowed().unwrap(), vec![allowed[1]]);
            let helper = std::thread::spawn(|| {
                keep_off_issuing_core();
                sys::allowed().unwrap()
            })
            .join()
            .unwrap();
            assert!(!helper.contains(&allowed[1]) && !helper.is_empty(), "{helper:?}");
        })
        .join()
        .unwrap();
        assert!(matches!(
            pin_issuing_thread(IssueCpu::Core(usize::MAX / 2), None, &mut || Ok(1.0)),
            Err(e) if e.contains("--cpu")
        ));
    }

    #[test]
    fn auto_leaves_the_thread_where_it_was_when_a_measurement_fails() {
        let _turn = PINNING.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let before = sys::allowed().unwrap();
            let err = pin_issuing_thread(IssueCpu::Auto, None, &mut || Err("no GPU".into())).unwrap_err();
            assert!(err.contains("no GPU"), "{err}");
            assert_eq!(sys::allowed().unwrap(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn auto_pins_to_the_core_that_issues_fastest() {
        let _turn = PINNING.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = sys::allowed().unwrap();
        let Some(&fast) = allowed.last() else {
            return;
        };
        std::thread::spawn(move || {
            // A fake measurement: fast on the last allowed core only, read from where the thread runs.
            let mut measure = || Ok(if sys::allowed()? == vec![fast] { 1.0 } else { 3.0 });
            let pinned = pin_issuing_thread(IssueCpu::Auto, None, &mut measure).unwrap().unwrap();
            assert_eq!(pinned.core, fast);
            assert_eq!(pinned.launch_us.len(), allowed.len());
            assert_eq!(sys::allowed().unwrap(), vec![fast]);
            if allowed.len() > 1 {
                assert!(
                    pinned
                        .describe()
                        .contains(&format!("CPU {fast}, the fastest of {}", allowed.len()))
                );
            }
        })
        .join()
        .unwrap();
    }
}
