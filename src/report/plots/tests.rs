use super::*;
use crate::report::{load_results, write_results};
use crate::sim::run::{RecordOptions, simulate};
use polars::prelude::SerReader;
use std::collections::{BTreeMap, HashSet};

/// Every policy × batch limit 1 and 4 × two prompt lengths: 12 small burst runs on the analytic H100.
const SWEEP: &str = r#"
name = "plots"
seed = 0

[model]
name = "qwen2.5-0.5b"

[hardware]
gpu = "h100-sxm"

[cost]
kind = "analytic"

[scheduler]
max_batch_size = 4

[workload]
arrival = "burst"
requests = 8
prompt_len = 64
output_len = [16, 32]

[sweep]
"scheduler.policy" = ["static", "continuous", "grouped"]
"scheduler.max_batch_size" = [1, 4]
"workload.prompt_len" = [64, 256]
"#;

/// Simulates `scenario` and writes its results folder under `dir`.
fn simulated(dir: &Path, scenario: &str) -> Results {
    let runs = crate::workload::load_runs_str(scenario, &dir.join("scenario.toml"), &[], None).unwrap();
    let reports: Vec<_> = runs
        .iter()
        .map(|spec| simulate(spec, RecordOptions::from_scenario(&spec.scenario)).unwrap())
        .collect();
    write_results(dir, &reports).unwrap();
    load_results(dir).unwrap()
}

fn without_steps_or_tokens() -> String {
    format!("{SWEEP}\n[output]\nsteps = false\ntoken_trace_limit = 0\n")
}

fn ids(charts: &[Chart]) -> Vec<&str> {
    charts.iter().map(|c| c.id.as_str()).collect()
}

/// Every chart file, by file name.
fn chart_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir.join("charts"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// What each chart's SVG must say on its axes (units included).
fn axis_texts(id: &str) -> &'static [&'static str] {
    match id {
        "throughput_vs_batch" => &["max batch size (sequences)", "output throughput (tok/s)"],
        "ttft_distribution" => &["TTFT (ms", "share of requests (fraction)"],
        "ttft_vs_queue" => &["requests queued at arrival (requests)", "mean TTFT (ms)"],
        "itl_heatmap" => &["output token position (tokens)", "request (id)", "ITL (ms)"],
        "kv_growth" => &[
            "KV per request (MiB)",
            "prompt length (tokens)",
            "time since the first arrival (ms)",
        ],
        "peak_memory" => &["GPU memory (MiB)", "run (name, policy)"],
        "timeline" => &["time (ms)", "requests", "KV in use (%)"],
        "validation_parity" => &[
            "measured (tok/s)",
            "simulated (tok/s)",
            "measured (ms)",
            "simulated (ms)",
            "measured (MiB)",
            "simulated (MiB)",
        ],
        "step_error_by_kind" => &[
            "step-time error, (predicted − measured) / measured (%)",
            "share of steps (fraction)",
        ],
        other => panic!("no expected axis texts for {other}"),
    }
}

/// A chart's files are a valid PNG and SVG of non-trivial content, with its title and axis labels drawn.
fn check_chart(dir: &Path, chart: &Chart) {
    assert_eq!(chart.png, dir.join("charts").join(format!("{}.png", chart.id)));
    assert_eq!(chart.svg, dir.join("charts").join(format!("{}.svg", chart.id)));
    assert!(!chart.title.is_empty() && chart.caption.ends_with('.'), "{chart:?}");

    let png = png::decode(&fs::read(&chart.png).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", chart.id));
    assert_eq!((png.width, png.height), DEFAULT_SIZE, "{}", chart.id);
    let colours = png.distinct_pixels();
    assert!(colours > 50, "{}: only {colours} distinct colours", chart.id);

    let svg = fs::read_to_string(&chart.svg).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", chart.id);
    assert!(svg.trim_end().ends_with("</svg>"), "{}", chart.id);
    assert!(svg.matches("<text").count() >= 10, "{}: too little text", chart.id);
    assert!(
        svg.contains(&format!(">\n{}\n</text>", chart.title)),
        "{}: the title is drawn",
        chart.id
    );
    for text in axis_texts(&chart.id) {
        assert!(svg.contains(text), "{}: no axis label {text:?}", chart.id);
    }
}

#[test]
fn every_chart_renders_from_a_simulated_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let results = simulated(tmp.path(), SWEEP);
    let charts = render_charts(&results).unwrap();
    assert_eq!(ids(&charts), CHART_IDS);
    for chart in &charts {
        check_chart(tmp.path(), chart);
    }
    // Nothing but the charts (no temporary files left behind).
    let expected: Vec<String> = CHART_IDS
        .iter()
        .flat_map(|id| [format!("{id}.png"), format!("{id}.svg")])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(chart_files(tmp.path()).into_keys().collect::<Vec<_>>(), expected);
}

#[test]
fn rendering_twice_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let results = simulated(tmp.path(), SWEEP);
    let first = render_charts(&results).unwrap();
    let before = chart_files(tmp.path());
    let second = render_charts(&load_results(tmp.path()).unwrap()).unwrap();
    assert_eq!(first, second);
    let after = chart_files(tmp.path());
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} differs between renders");
    }
}

#[test]
fn charts_needing_steps_or_tokens_are_skipped_when_those_tables_are_absent() {
    let tmp = tempfile::tempdir().unwrap();
    // A full render first: its step and token charts must not survive as stale files.
    render_charts(&simulated(tmp.path(), SWEEP)).unwrap();
    let results = simulated(tmp.path(), &without_steps_or_tokens());
    assert!(results.runs.iter().all(|r| r.steps.is_none() && r.tokens.is_none()));
    let charts = render_charts(&results).unwrap();
    assert_eq!(
        ids(&charts),
        ["throughput_vs_batch", "ttft_distribution", "kv_growth", "peak_memory"]
    );
    let files = chart_files(tmp.path());
    for id in ["ttft_vs_queue", "itl_heatmap", "timeline"] {
        assert!(!files.contains_key(&format!("{id}.png")) && !files.contains_key(&format!("{id}.svg")));
    }
}

#[test]
fn no_runs_no_charts() {
    let tmp = tempfile::tempdir().unwrap();
    write_results(tmp.path(), &[]).unwrap();
    // `load_results` cannot read an empty summary back (its `run` column is untyped), so build the folder's
    // results by hand.
    let file = fs::File::open(tmp.path().join("summary.parquet")).unwrap();
    let results = Results {
        dir: tmp.path().to_owned(),
        summary: polars::prelude::ParquetReader::new(file).finish().unwrap(),
        runs: Vec::new(),
        validation: None,
    };
    let charts = render_charts(&results).unwrap();
    assert!(charts.is_empty());
    assert!(!tmp.path().join("charts").exists());
}

#[test]
fn one_batch_limit_draws_bars_per_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = SWEEP.replace(r#""scheduler.max_batch_size" = [1, 4]"#, "");
    let results = simulated(tmp.path(), &scenario);
    let charts = render_charts(&results).unwrap();
    assert_eq!(ids(&charts), CHART_IDS);
    let svg = fs::read_to_string(&charts[0].svg).unwrap();
    assert!(
        svg.contains("policy") && svg.contains("max batch size 4"),
        "bars name their batch limit"
    );
    assert!(!svg.contains("max batch size (sequences)"));
}

#[test]
fn representative_run_has_the_most_output_tokens_first_on_ties() {
    let tmp = tempfile::tempdir().unwrap();
    let results = simulated(tmp.path(), SWEEP);
    let data = Data::read(&results).unwrap();
    let names: Vec<&str> = data.representatives(|_| true).iter().map(|r| r.name).collect();
    // Every run serves the same 8 requests: the larger batch limit breaks the tie, then run order.
    assert_eq!(names, ["r002", "r006", "r010"]);
    assert_eq!(data.policies, ["static", "continuous", "grouped"]);
}

#[test]
fn facets_leave_out_axes_and_repeated_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let results = simulated(tmp.path(), SWEEP);
    let data = Data::read(&results).unwrap();
    let facets: Vec<&str> = data
        .varying_labels(&["policy", "max_batch_size"])
        .into_iter()
        .map(|i| data.labels[i].as_str())
        .collect();
    // `scheduler.policy` and `scheduler.max_batch_size` repeat `policy` and `max_batch_size`.
    assert_eq!(facets, ["workload.prompt_len"]);
}

#[test]
fn numbers_read_cleanly() {
    assert_eq!(format_number(0.0), "0");
    assert_eq!(format_number(0.1 + 0.2), "0.3");
    assert_eq!(format_number(2.5), "2.5");
    assert_eq!(format_number(1234.0), "1234");
    assert_eq!(format_number(12_500.0), "12.5k");
    assert_eq!(format_number(-3.0), "-3");
    assert_eq!(format_number(2_000_000.0), "2M");
}

#[test]
fn ticks_are_round_numbers() {
    assert_eq!(
        linear_ticks(2.2, 3.067)
            .iter()
            .map(|v| format_number(*v))
            .collect::<Vec<_>>(),
        ["2.2", "2.4", "2.6", "2.8", "3"]
    );
    assert_eq!(linear_ticks(0.0, 100.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
    assert_eq!(linear_ticks(5.0, 5.0), [5.0]);
}

#[test]
fn grids_keep_panels_near_four_by_three() {
    assert_eq!(grid(1, DEFAULT_SIZE), (1, 1));
    assert_eq!(grid(2, DEFAULT_SIZE), (1, 2));
    assert_eq!(grid(4, DEFAULT_SIZE), (2, 2));
    assert_eq!(grid(6, DEFAULT_SIZE), (2, 3));
    let (rows, cols) = grid(18, DEFAULT_SIZE);
    assert!(rows * cols >= 18 && rows * cols < 18 + cols);
}

/// Draws charts into `$BATCHLAB_PLOTS_PREVIEW` (a folder) for a person to look at: of this file's sweep, or of the
/// scenario file `$BATCHLAB_PLOTS_SCENARIO` when set.
#[test]
#[ignore = "writes charts to $BATCHLAB_PLOTS_PREVIEW for a person to look at"]
fn preview() {
    let dir = PathBuf::from(std::env::var("BATCHLAB_PLOTS_PREVIEW").expect("set BATCHLAB_PLOTS_PREVIEW"));
    fs::create_dir_all(&dir).unwrap();
    let results = match std::env::var("BATCHLAB_PLOTS_SCENARIO") {
        Ok(path) => {
            let runs = crate::workload::load_runs(Path::new(&path), &[], None).unwrap();
            let reports: Vec<_> = runs
                .iter()
                .map(|spec| simulate(spec, RecordOptions::from_scenario(&spec.scenario)).unwrap())
                .collect();
            write_results(&dir, &reports).unwrap();
            load_results(&dir).unwrap()
        }
        Err(_) => simulated(&dir, SWEEP),
    };
    render_charts(&results).unwrap();
}

/// Just enough of PNG to check what the bitmap backend wrote: chunks, zlib (stored, fixed and dynamic Huffman
/// blocks) and scanline filters, for 8-bit RGB and RGBA. Written here rather than taken from a crate so the check
/// does not share code with the encoder it checks.
mod png {
    use super::HashSet;

    pub struct Image {
        pub width: u32,
        pub height: u32,
        channels: usize,
        pixels: Vec<u8>,
    }

    impl Image {
        pub fn distinct_pixels(&self) -> usize {
            self.pixels.chunks(self.channels).collect::<HashSet<_>>().len()
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Image, String> {
        const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        if bytes.get(..8) != Some(&SIGNATURE[..]) {
            return Err("no PNG signature".into());
        }
        let mut at = 8;
        let mut header = None;
        let mut idat = Vec::new();
        let mut ended = false;
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = &bytes[at + 4..at + 8];
            let data = bytes.get(at + 8..at + 8 + len).ok_or("truncated chunk")?;
            match kind {
                b"IHDR" => header = Some(data.to_vec()),
                b"IDAT" => idat.extend_from_slice(data),
                b"IEND" => ended = true,
                _ => {}
            }
            at += 12 + len;
        }
        if !ended {
            return Err("no IEND".into());
        }
        let h = header.ok_or("no IHDR")?;
        let width = u32::from_be_bytes(h[0..4].try_into().unwrap());
        let height = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let channels = match (h[8], h[9], h[12]) {
            (8, 2, 0) => 3,
            (8, 6, 0) => 4,
            other => return Err(format!("unsupported depth/colour/interlace {other:?}")),
        };
        if idat.len() < 2 || idat[0] & 0x0f != 8 {
            return Err("not zlib deflate".into());
        }
        let raw = inflate(&idat[2..])?;
        let stride = width as usize * channels;
        if raw.len() != (stride + 1) * height as usize {
            return Err(format!("{} bytes of scanlines for {width}×{height}", raw.len()));
        }
        let mut pixels = vec![0u8; stride * height as usize];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= channels {
                    pixels[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 { pixels[(y - 1) * stride + x] } else { 0 };
                let c = if y > 0 && x >= channels {
                    pixels[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let predicted = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((a as u16 + b as u16) / 2) as u8,
                    4 => paeth(a, b, c),
                    f => return Err(format!("filter {f}")),
                };
                pixels[y * stride + x] = line[x].wrapping_add(predicted);
            }
        }
        Ok(Image {
            width,
            height,
            channels,
            pixels,
        })
    }

    fn paeth(a: u8, b: u8, c: u8) -> u8 {
        let p = a as i16 + b as i16 - c as i16;
        let (pa, pb, pc) = ((p - a as i16).abs(), (p - b as i16).abs(), (p - c as i16).abs());
        if pa <= pb && pa <= pc {
            a
        } else if pb <= pc {
            b
        } else {
            c
        }
    }

    struct Bits<'a> {
        data: &'a [u8],
        at: usize,
        bit: u32,
    }

    impl Bits<'_> {
        fn bit(&mut self) -> Result<u32, String> {
            let byte = *self.data.get(self.at).ok_or("deflate stream ends early")?;
            let b = (byte >> self.bit) & 1;
            self.bit += 1;
            if self.bit == 8 {
                self.bit = 0;
                self.at += 1;
            }
            Ok(b as u32)
        }

        /// `n` bits, least significant first.
        fn bits(&mut self, n: u32) -> Result<u32, String> {
            (0..n).try_fold(0, |v, i| Ok(v | (self.bit()? << i)))
        }
    }

    /// Canonical Huffman code: how many codes of each length, and the symbols in code order.
    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Huffman {
            let mut counts = [0u16; 16];
            for &l in lengths {
                counts[l as usize] += 1;
            }
            counts[0] = 0;
            let mut symbols: Vec<u16> = (0..lengths.len() as u16).filter(|&s| lengths[s as usize] > 0).collect();
            symbols.sort_by_key(|&s| lengths[s as usize]);
            Huffman { counts, symbols }
        }

        fn decode(&self, bits: &mut Bits) -> Result<u16, String> {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= bits.bit()? as i32;
                let count = self.counts[len] as i32;
                if code - first < count {
                    return Ok(self.symbols[(index + code - first) as usize]);
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            Err("bad Huffman code".into())
        }
    }

    const LENGTH_BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227,
        258,
    ];
    const LENGTH_EXTRA: [u8; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
        6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u8; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
    ];

    fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
        let mut bits = Bits { data, at: 0, bit: 0 };
        let mut out = Vec::new();
        loop {
            let last = bits.bits(1)? == 1;
            match bits.bits(2)? {
                0 => {
                    if bits.bit != 0 {
                        bits.bit = 0;
                        bits.at += 1;
                    }
                    let len = bits.bits(16)? as usize;
                    let _complement = bits.bits(16)?;
                    out.extend_from_slice(data.get(bits.at..bits.at + len).ok_or("stored block ends early")?);
                    bits.at += len;
                }
                1 => {
                    let mut lengths = [0u8; 288];
                    lengths[..144].fill(8);
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    lengths[280..].fill(8);
                    codes(&mut bits, &mut out, &Huffman::new(&lengths), &Huffman::new(&[5; 30]))?;
                }
                2 => {
                    let literals = bits.bits(5)? as usize + 257;
                    let distances = bits.bits(5)? as usize + 1;
                    let code_lengths = bits.bits(4)? as usize + 4;
                    const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
                    let mut cl = [0u8; 19];
                    for &i in &ORDER[..code_lengths] {
                        cl[i] = bits.bits(3)? as u8;
                    }
                    let cl = Huffman::new(&cl);
                    let mut lengths = Vec::with_capacity(literals + distances);
                    while lengths.len() < literals + distances {
                        match cl.decode(&mut bits)? {
                            s @ 0..=15 => lengths.push(s as u8),
                            16 => {
                                let previous = *lengths.last().ok_or("repeat with nothing before")?;
                                let n = 3 + bits.bits(2)?;
                                lengths.extend((0..n).map(|_| previous));
                            }
                            17 => lengths.extend((0..3 + bits.bits(3)?).map(|_| 0)),
                            _ => lengths.extend((0..11 + bits.bits(7)?).map(|_| 0)),
                        }
                    }
                    let lit = Huffman::new(&lengths[..literals]);
                    let dist = Huffman::new(&lengths[literals..literals + distances]);
                    codes(&mut bits, &mut out, &lit, &dist)?;
                }
                _ => return Err("reserved block type".into()),
            }
            if last {
                return Ok(out);
            }
        }
    }

    fn codes(bits: &mut Bits, out: &mut Vec<u8>, lit: &Huffman, dist: &Huffman) -> Result<(), String> {
        loop {
            match lit.decode(bits)? {
                s @ 0..=255 => out.push(s as u8),
                256 => return Ok(()),
                s => {
                    let s = (s - 257) as usize;
                    let len =
                        *LENGTH_BASE.get(s).ok_or("bad length")? as usize + bits.bits(LENGTH_EXTRA[s] as u32)? as usize;
                    let d = dist.decode(bits)? as usize;
                    let back =
                        *DIST_BASE.get(d).ok_or("bad distance")? as usize + bits.bits(DIST_EXTRA[d] as u32)? as usize;
                    let from = out.len().checked_sub(back).ok_or("distance before the start")?;
                    for i in 0..len {
                        out.push(out[from + i]);
                    }
                }
            }
        }
    }
}

/// A small validation: the sweep's batch-limit-4 runs against a backend that measures each step kind off by a known
/// factor, written as `validate` writes it.
fn validated(dir: &Path) -> Results {
    use crate::validate::fake::{Factors, PerturbedBackend};
    let scenario = SWEEP.replace(r#""scheduler.max_batch_size" = [1, 4]"#, "");
    let specs = crate::workload::load_runs_str(&scenario, &dir.join("scenario.toml"), &[], None).unwrap();
    let prepared: Vec<_> = specs.iter().map(|s| crate::sim::run::prepare(s).unwrap()).collect();
    let mut backend = PerturbedBackend::new(Factors {
        decode: 1.03,
        prefill: 0.93,
        mixed: 1.06,
    });
    backend.memory_factor = Some(1.02);
    let options = crate::validate::ValidateOptions {
        warmup_steps: 0,
        record: RecordOptions {
            steps: true,
            token_trace_limit: 10_000,
        },
        repeats: 1,
    };
    let v = crate::validate::validate_runs(&specs, &prepared, &mut backend, &options, &mut |_| {}).unwrap();
    crate::validate::write_validation(dir, &v, "plots").unwrap();
    load_results(dir).unwrap()
}

#[test]
fn validation_charts_render_from_a_validated_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let results = validated(tmp.path());
    assert!(results.validation.is_some());
    let charts = render_charts(&results).unwrap();
    let expected: Vec<&str> = CHART_IDS.iter().chain(&VALIDATION_CHART_IDS).copied().collect();
    assert_eq!(ids(&charts), expected);
    // (the others are checked on the simulated sweep above; with one batch limit the throughput chart has bars)
    for chart in &charts[CHART_IDS.len()..] {
        check_chart(tmp.path(), chart);
    }
    let parity = fs::read_to_string(&charts[CHART_IDS.len()].svg).unwrap();
    for title in [
        "output throughput, median error",
        "TTFT p95, median error",
        "peak memory, median error",
    ] {
        assert!(parity.contains(title), "parity panel {title:?}");
    }
    let steps = fs::read_to_string(&charts[CHART_IDS.len() + 1].svg).unwrap();
    for kind in ["decode-only: ", "prefill-only: ", "mixed: "] {
        assert!(steps.contains(kind), "step kind {kind:?} in the legend");
    }
    // The decode steps are 3% slow: the model's error is 1 − 1/1.03.
    assert!(steps.contains("median |error| 2.91%"), "decode median in the legend");

    // The same folder simulated again is no longer validated: the validation charts go with it.
    let again = simulated(tmp.path(), SWEEP);
    assert!(again.validation.is_none());
    let charts = render_charts(&again).unwrap();
    assert_eq!(ids(&charts), CHART_IDS);
    let files = chart_files(tmp.path());
    assert!(
        VALIDATION_CHART_IDS
            .iter()
            .all(|id| !files.contains_key(&format!("{id}.png")))
    );
}
