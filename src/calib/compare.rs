//! Judging profiles: how well one predicts points it never measured (an offset grid), and whether two calibrations
//! of the same card agree within their measured spread.

use super::interp::{Curve, PrefillLaunch, PrefillSurface, Surface};
use super::profile::Profile;
use crate::metrics::percentile_sorted;
use crate::sim::calibrated::CalibratedCost;

/// Relative prediction errors of one op over the points of the other grid.
#[derive(Clone, Debug, PartialEq)]
pub struct OpErrors {
    pub op: String,
    /// Whether the calibrated cost model uses this table as it stands (for a GEMM: the faster of the two kernels).
    pub used: bool,
    /// |predicted − measured| / measured, one per point.
    pub errors: Vec<f64>,
    /// Each point's shape and (predicted, measured) µs, in the order of `errors`.
    pub points: Vec<PointError>,
}

/// One point of the offset grid: its shape as the tables name it, what the profile predicts and what was measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PointError {
    pub shape: String,
    pub predicted_us: f64,
    pub measured_us: f64,
}

impl OpErrors {
    /// The errors of `points`, each |predicted − measured| / measured.
    pub fn new(op: String, used: bool, points: Vec<PointError>) -> OpErrors {
        let errors = points.iter().map(|p| rel(p.predicted_us, p.measured_us)).collect();
        OpErrors {
            op,
            used,
            errors,
            points,
        }
    }
}

impl OpErrors {
    pub fn median(&self) -> f64 {
        self.quantile(50.0)
    }

    pub fn p95(&self) -> f64 {
        self.quantile(95.0)
    }

    pub fn max(&self) -> f64 {
        self.errors.iter().copied().fold(0.0, f64::max)
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut e = self.errors.clone();
        if e.is_empty() {
            return f64::NAN;
        }
        e.sort_by(f64::total_cmp);
        percentile_sorted(&e, q)
    }
}

fn rel(predicted: f64, measured: f64) -> f64 {
    (predicted - measured).abs() / measured
}

fn point(shape: String, predicted_us: f64, measured_us: f64) -> PointError {
    PointError {
        shape,
        predicted_us,
        measured_us,
    }
}

fn curve_errors(op: String, used: bool, predict: impl Fn(f64) -> f64, measured: &Curve) -> OpErrors {
    let points = (measured.x.iter().zip(&measured.y))
        .map(|(&x, &y)| point(format!("{x} rows"), predict(x), y))
        .collect();
    OpErrors::new(op, used, points)
}

/// `names`: what the surface's x and y are (e.g. "chunk", "offset").
fn surface_errors(op: &str, names: (&str, &str), predict: impl Fn(f64, f64) -> f64, measured: &Surface) -> OpErrors {
    let ny = measured.y.len();
    let points = (measured.z.iter().enumerate())
        .map(|(i, &z)| {
            let (x, y) = (measured.x[i / ny], measured.y[i % ny]);
            point(format!("{} {x} × {} {y}", names.0, names.1), predict(x, y), z)
        })
        .collect();
    OpErrors::new(op.to_string(), true, points)
}

/// Per op, how far `profile`'s interpolation is from what `offset` measured at its own points. Both must be of the
/// same model and card; `offset` is usually measured on [`super::driver::Grid::offset`].
pub fn out_of_sample(profile: &Profile, offset: &Profile) -> Result<Vec<OpErrors>, String> {
    let mut out = Vec::new();
    for m in &offset.gemm {
        let p = profile.gemm_table(&m.name)?;
        if p.with_silu_mul != m.with_silu_mul {
            return Err(format!(
                "gemm {}: the profile and the offset grid did not time the same thing (one through SiLU·mul, one \
                 without): they are of different batchlab builds",
                m.name
            ));
        }
        // What the engine runs: the kernel the profile picks, measured at this point — cuBLAS on the rows the
        // engine runs it on (padded where the profile's table is: the offset grid timed it there).
        let chosen = (m.ours_us.x.iter().enumerate())
            .map(|(i, &x)| {
                if p.ours_faster(x) {
                    return Ok(m.ours_us.y[i]);
                }
                let at = p.padded_rows(x).unwrap_or(x);
                (m.cublas_us.x.iter().position(|&c| c == at))
                    .map(|j| m.cublas_us.y[j])
                    .ok_or_else(|| {
                        format!(
                            "gemm {}: the engine runs cuBLAS on {at} rows for {x}, which the offset grid did not time \
                             (measured by another batchlab build?)",
                            m.name
                        )
                    })
            })
            .collect::<Result<Vec<f64>, String>>()?;
        let chosen = Curve {
            x: m.ours_us.x.clone(),
            y: chosen,
        };
        out.push(curve_errors(
            format!("gemm {} (engine's choice)", m.name),
            true,
            |x| p.best_us(x),
            &chosen,
        ));
        out.push(curve_errors(
            format!("gemm {} (ours)", m.name),
            false,
            |x| p.ours_us.at(x),
            &m.ours_us,
        ));
        // Where the engine pads cuBLAS's rows, the offset grid timed it on the rows it pads to: points of the
        // profile's own grid, timed a second time (no interpolation, only run-to-run variation).
        let what = if p.cublas_padded {
            "cuBLAS, on the padded rows"
        } else {
            "cuBLAS"
        };
        out.push(curve_errors(
            format!("gemm {} ({what})", m.name),
            false,
            |x| p.cublas_us.at(x),
            &m.cublas_us,
        ));
    }
    for m in &offset.ops {
        let table = &profile.op_table(&m.name)?.us;
        out.push(curve_errors(m.name.clone(), true, |x| table.at(x), &m.us));
    }
    // As the calibrated cost model reads them.
    let prefill = PrefillSurface::new(&profile.attention_prefill.us, PrefillLaunch::of(&profile.fingerprint));
    out.push(surface_errors(
        "attention prefill",
        ("chunk", "offset"),
        |c, o| prefill.at(c, o),
        &offset.attention_prefill.us,
    ));
    let cost = CalibratedCost::new(profile, &profile.fingerprint.model, "check")?;
    out.push(surface_errors(
        "attention decode",
        ("batch", "context"),
        |b, c| cost.decode_table_at(b, c),
        &offset.attention_decode.us,
    ));
    // Decode attention over batches of mixed context lengths, as the cost model prices a step's decodes.
    if !offset.decode_mixed.is_empty() {
        let points = (offset.decode_mixed.iter())
            .map(|m| {
                let (n, longest) = (m.contexts.len(), m.contexts.iter().max().copied().unwrap_or(0));
                let mean = m.contexts.iter().map(|&c| f64::from(c)).sum::<f64>() / n.max(1) as f64;
                let shape = format!("batch {n}, mean context {mean:.0}, longest {longest}");
                point(shape, cost.decode_attention_us(&m.contexts), m.us)
            })
            .collect();
        out.push(OpErrors::new("attention decode, mixed lengths".into(), true, points));
    }
    Ok(out)
}

/// How two calibrations of the same grid agree: per table, the share of points whose medians differ by no more
/// than the larger of their two measured spreads, and the largest relative difference.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    pub op: String,
    /// Points both profiles measured (at the same coordinates).
    pub points: usize,
    pub within_spread: usize,
    pub max_rel_diff: f64,
    /// Points only one of the two measured (their grids differ there): not compared.
    pub unmatched: usize,
    /// Of each point outside the spread: how far apart the two are (relative) and the spread it was held to.
    pub outside: Vec<(f64, f64)>,
}

/// The coordinates of a table's points, in the order of its values: a curve's x, a surface's (x, y) row by row.
fn curve_keys(c: &Curve) -> Vec<(f64, f64)> {
    c.x.iter().map(|&x| (x, 0.0)).collect()
}

fn surface_keys(s: &Surface) -> Vec<(f64, f64)> {
    (s.x.iter()).flat_map(|&x| s.y.iter().map(move |&y| (x, y))).collect()
}

/// Compares two tables point by point where both measured the same coordinates (`ka`, `kb`: each value's
/// coordinates): a point agrees when the two medians differ by no more than the larger of their spreads.
fn agree(
    op: String,
    (ka, a, sa): (&[(f64, f64)], &[f64], &[f64]),
    (kb, b, sb): (&[(f64, f64)], &[f64], &[f64]),
) -> Agreement {
    let (mut points, mut within) = (0, 0);
    let mut max_rel: f64 = 0.0;
    let mut outside = Vec::new();
    for (i, key) in ka.iter().enumerate().take(a.len()) {
        let Some(j) = kb.iter().take(b.len()).position(|k| k == key) else {
            continue;
        };
        points += 1;
        let d = rel(b[j], a[i]);
        max_rel = max_rel.max(d);
        let tolerance = sa.get(i).copied().unwrap_or(0.0).max(sb.get(j).copied().unwrap_or(0.0));
        if d <= tolerance {
            within += 1;
        } else {
            outside.push((d, tolerance));
        }
    }
    Agreement {
        op,
        points,
        within_spread: within,
        max_rel_diff: max_rel,
        unmatched: a.len().min(ka.len()) + b.len().min(kb.len()) - 2 * points,
        outside,
    }
}

/// One sentence on the points of `rows` outside their spread, if any: how far apart the two profiles put them (the
/// median and the largest relative difference) against the spreads they were held to (median).
pub fn outside_summary(rows: &[Agreement]) -> Option<String> {
    let mut diffs: Vec<f64> = rows.iter().flat_map(|r| r.outside.iter().map(|o| o.0)).collect();
    let mut spreads: Vec<f64> = rows.iter().flat_map(|r| r.outside.iter().map(|o| o.1)).collect();
    if diffs.is_empty() {
        return None;
    }
    diffs.sort_by(f64::total_cmp);
    spreads.sort_by(f64::total_cmp);
    Some(format!(
        "The {} point(s) outside their spread are {:.2}% apart at the median and {:.2}% at most, against spreads of \
         {:.2}% at the median.",
        diffs.len(),
        100.0 * percentile_sorted(&diffs, 50.0),
        100.0 * diffs[diffs.len() - 1],
        100.0 * percentile_sorted(&spreads, 50.0)
    ))
}

/// How two calibrations of one model agree, table by table, over the points both measured.
pub fn agreement(a: &Profile, b: &Profile) -> Result<Vec<Agreement>, String> {
    let mut out = Vec::new();
    for ga in &a.gemm {
        let gb = b.gemm_table(&ga.name)?;
        // Tables timed through SiLU·mul in one profile and not in the other are compared all the same, and say so.
        let timed = match (ga.with_silu_mul, gb.with_silu_mul) {
            (true, false) => "; A through SiLU·mul, B not",
            (false, true) => "; B through SiLU·mul, A not",
            _ => "",
        };
        let (ka, kb) = (curve_keys(&ga.ours_us), curve_keys(&gb.ours_us));
        out.push(agree(
            format!("gemm {} (ours{timed})", ga.name),
            (&ka, &ga.ours_us.y, &ga.ours_spread),
            (&kb, &gb.ours_us.y, &gb.ours_spread),
        ));
        let (ka, kb) = (curve_keys(&ga.cublas_us), curve_keys(&gb.cublas_us));
        out.push(agree(
            format!("gemm {} (cuBLAS{timed})", ga.name),
            (&ka, &ga.cublas_us.y, &ga.cublas_spread),
            (&kb, &gb.cublas_us.y, &gb.cublas_spread),
        ));
    }
    for oa in &a.ops {
        let ob = b.op_table(&oa.name)?;
        let (ka, kb) = (curve_keys(&oa.us), curve_keys(&ob.us));
        out.push(agree(
            oa.name.clone(),
            (&ka, &oa.us.y, &oa.spread),
            (&kb, &ob.us.y, &ob.spread),
        ));
    }
    for (name, ta, tb) in [
        ("attention prefill", &a.attention_prefill, &b.attention_prefill),
        ("attention decode", &a.attention_decode, &b.attention_decode),
    ] {
        let (ka, kb) = (surface_keys(&ta.us), surface_keys(&tb.us));
        out.push(agree(
            name.into(),
            (&ka, &ta.us.z, &ta.spread),
            (&kb, &tb.us.z, &tb.spread),
        ));
    }
    if out.iter().all(|r| r.points == 0) {
        return Err("the two profiles have no grid point in common".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::profile::MixedDecode;
    use crate::model::by_name;
    use crate::sim::calibrated::tests::synthetic_profile;

    #[test]
    fn a_profile_predicts_its_own_linear_tables_exactly() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let p = synthetic_profile(&model);
        // Measure "offset" points on the same straight lines: interpolation must be exact.
        let mut offset = p.clone();
        for g in &mut offset.gemm {
            // GEMMs are read on the line between the grid points around them.
            g.ours_us = Curve {
                x: vec![5.0, 200.0],
                y: vec![5.0 + 0.05, 5.0 + 2.0],
            };
            g.cublas_us = Curve {
                x: vec![5.0, 200.0],
                y: vec![5.5 + 0.055, 5.5 + 2.2],
            };
        }
        let errors = out_of_sample(&p, &offset).unwrap();
        let qkv = errors.iter().find(|e| e.op == "gemm qkv (ours)").unwrap();
        assert!(qkv.max() < 1e-12, "{qkv:?}");
        assert!(errors.iter().all(|e| e.median() < 1e-9), "{errors:?}");
    }

    /// Where the engine pads cuBLAS's rows, the engine's choice at an offset row count is cuBLAS timed on the rows
    /// it pads to, against the profile's time there: a kernel cuBLAS picks at those rows alone (here twice as fast
    /// as the line through its neighbours) is no error.
    #[test]
    fn the_engines_choice_of_a_padded_cublas_is_its_padded_rows() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let mut p = synthetic_profile(&model);
        let fast = |x: f64| if x == 336.0 { 0.5 } else { 1.0 };
        for g in &mut p.gemm {
            g.ours_us.y.iter_mut().for_each(|y| *y *= 3.0);
            let x: Vec<f64> = crate::model::cublas_grid(8192).into_iter().map(f64::from).collect();
            g.cublas_us = Curve::new(x.clone(), x.iter().map(|&r| (5.5 + 0.011 * r) * fast(r)).collect());
            g.cublas_spread = vec![0.0; x.len()];
            g.cublas_padded = true;
        }
        p.check().unwrap();
        let mut offset = p.clone();
        for g in &mut offset.gemm {
            g.ours_us = Curve::new(vec![333.0], vec![100.0]);
            g.cublas_us = Curve::new(vec![336.0], vec![(5.5 + 0.011 * 336.0) * 0.5]);
            g.cublas_padded = false;
        }
        let errors = out_of_sample(&p, &offset).unwrap();
        let chosen = errors.iter().find(|e| e.op == "gemm qkv (engine's choice)").unwrap();
        assert!(chosen.max() < 1e-12, "{chosen:?}");
        assert!(errors.iter().any(|e| e.op == "gemm qkv (cuBLAS, on the padded rows)"));
        // Not padded, the engine would run cuBLAS on 333 rows, which this offset grid did not time: refused.
        for g in &mut p.gemm {
            g.cublas_padded = false;
        }
        assert!(
            out_of_sample(&p, &offset).is_err(),
            "the offset grid did not time 333 rows for cuBLAS"
        );
    }

    /// Mixed-length decode points are priced as a step's decodes are (`CalibratedCost::decode_attention_us`): an
    /// offset point measured at what that predicts has no error, one measured 10% slower an error of 1 - 1/1.1.
    #[test]
    fn mixed_length_decodes_are_checked_as_the_cost_model_prices_them() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let p = synthetic_profile(&model);
        let cost = CalibratedCost::new(&p, &model, "synthetic").unwrap();
        let contexts = vec![100, 900, 3000];
        let predicted = cost.decode_attention_us(&contexts);
        let mut offset = p.clone();
        offset.decode_mixed = vec![
            MixedDecode {
                contexts: contexts.clone(),
                us: predicted,
            },
            MixedDecode {
                contexts,
                us: 1.1 * predicted,
            },
        ];
        let errors = out_of_sample(&p, &offset).unwrap();
        let mixed = errors
            .iter()
            .find(|e| e.op == "attention decode, mixed lengths")
            .unwrap();
        assert!(mixed.used && mixed.errors.len() == 2, "{mixed:?}");
        assert!(
            mixed.errors[0] < 1e-12 && (mixed.errors[1] - (1.0 - 1.0 / 1.1)).abs() < 1e-9,
            "{mixed:?}"
        );
    }

    /// The committed H100 profiles against the offset grids measured with them, prefill attention as the cost
    /// model reads it (per unit of its launch's work): within 6% at the p95 for both models, where counting
    /// attention pairs read qwen2.5-1.5b's 700-token chunks 14% too slow.
    #[test]
    fn committed_h100_profiles_read_prefill_attention_out_of_sample_within_six_percent() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/h100-80gb-hbm3");
        for model in ["qwen2.5-0.5b", "qwen2.5-1.5b"] {
            let profile = Profile::load(&dir.join(format!("{model}.json"))).unwrap();
            let offset = Profile::load(&dir.join(format!("{model}.offset.json"))).unwrap();
            let rows = out_of_sample(&profile, &offset).unwrap();
            let prefill = rows.iter().find(|r| r.op == "attention prefill").unwrap();
            let mut e = prefill.errors.clone();
            e.sort_by(f64::total_cmp);
            assert_eq!(e.len(), 16, "{model}");
            let p95 = percentile_sorted(&e, 95.0);
            assert!(p95 < 0.06, "{model}: prefill attention p95 {:.2}%", 100.0 * p95);
            assert!(percentile_sorted(&e, 50.0) < 0.03, "{model}");
        }
    }

    #[test]
    fn agreement_counts_points_within_spread() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let a = synthetic_profile(&model);
        let mut b = a.clone();
        // 0.5% off everywhere (spread 1%): all agree; then one point 5% off.
        for g in &mut b.gemm {
            g.ours_us.y.iter_mut().for_each(|y| *y *= 1.005);
        }
        b.ops[0].us.y[2] *= 1.05;
        let r = agreement(&a, &b).unwrap();
        let qkv = r.iter().find(|x| x.op == "gemm qkv (ours)").unwrap();
        assert_eq!(qkv.within_spread, qkv.points);
        let norm = r.iter().find(|x| x.op == "add_rmsnorm").unwrap();
        assert_eq!(norm.within_spread, norm.points - 1);
        assert!((norm.max_rel_diff - 0.05).abs() < 1e-9);
        // The one point outside, 5% apart against its 1% spread, is the summary's.
        assert_eq!(norm.outside.len(), 1);
        let line = outside_summary(&r).unwrap();
        assert!(
            line.starts_with("The 1 point(s) outside their spread are 5.00% apart"),
            "{line}"
        );
        assert!(
            line.contains("5.00% at most") && line.contains("spreads of 1.00%"),
            "{line}"
        );
        assert!(outside_summary(&agreement(&a, &a).unwrap()).is_none());
    }

    #[test]
    fn gate_up_timed_through_silu_mul_in_one_profile_only_is_named_or_refused() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let a = synthetic_profile(&model);
        let mut b = a.clone();
        b.gemm.iter_mut().find(|t| t.name == "gate_up").unwrap().with_silu_mul = true;
        let r = agreement(&a, &b).unwrap();
        assert!(
            r.iter()
                .any(|x| x.op == "gemm gate_up (ours; B through SiLU·mul, A not)")
        );
        assert!(r.iter().any(|x| x.op == "gemm qkv (ours)"));
        let err = out_of_sample(&a, &b).unwrap_err();
        assert!(
            err.contains("gate_up") && err.contains("different batchlab builds"),
            "{err}"
        );
        assert!(out_of_sample(&b, &b).is_ok());
    }

    #[test]
    fn agreement_pairs_points_by_their_coordinates_when_grids_differ() {
        let model = by_name("qwen2.5-0.5b").unwrap();
        let a = synthetic_profile(&model);
        let mut b = a.clone();
        // b's decode table gains a batch between a's first two: every later row shifts, but the values at the
        // shared coordinates are the same, so they all agree and the new row is counted apart.
        let d = &mut b.attention_decode;
        let ny = d.us.y.len();
        let (x0, x1) = (d.us.x[0], d.us.x[1]);
        d.us.x.insert(1, (x0 + x1) / 2.0);
        let row: Vec<f64> = d.us.z[..ny].iter().map(|z| z * 3.0).collect();
        d.us.z.splice(ny..ny, row);
        d.spread.splice(ny..ny, vec![0.0; ny]);
        let r = agreement(&a, &b).unwrap();
        let decode = r.iter().find(|x| x.op == "attention decode").unwrap();
        assert_eq!(decode.points, a.attention_decode.us.z.len());
        assert_eq!(decode.within_spread, decode.points);
        assert_eq!(decode.unmatched, ny);
        assert_eq!(decode.max_rel_diff, 0.0);
    }
}
