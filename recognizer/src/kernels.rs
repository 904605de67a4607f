//! Plain-slice CPU kernels that training (Burn's CPU backend) and inference (tract) share, so the
//! recurrence a model is trained with is the one it is served with: one GEMM, single-threaded
//! because every caller already splits its work over images, directions, lines or pages, and the
//! LSTM recurrence.

/// `dst[m×n] = (dst +) lhs[m×k] · rhs[k×n]`; each operand is `(data, row stride, column stride)`,
/// so a transposed operand is just swapped strides.
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) {
    let extent = |rows: usize, cols: usize, (data, rs, cs): (&[f32], usize, usize)| {
        let last = (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs;
        assert!(
            rows == 0 || cols == 0 || last < data.len(),
            "matmul operand out of range"
        );
    };
    extent(m, k, lhs);
    extent(k, n, rhs);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    // SAFETY: every index gemm reads or writes is inside the slices, checked above; the
    // destination is exclusively borrowed.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The sizes of one LSTM direction's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LstmShape {
    pub steps: usize,
    pub batch: usize,
    pub hidden: usize,
}

impl LstmShape {
    /// `[batch, hidden]`: one step's hidden or cell state.
    pub fn state_len(self) -> usize {
        self.batch * self.hidden
    }

    /// `[batch, 4·hidden]`: one step's gates.
    pub fn gates_len(self) -> usize {
        4 * self.state_len()
    }

    /// The time steps in the order a direction visits them.
    pub fn order(self, reverse: bool) -> impl DoubleEndedIterator<Item = usize> + Clone {
        let steps = self.steps;
        (0..steps).map(move |i| if reverse { steps - 1 - i } else { i })
    }
}

/// One LSTM direction over time (ONNX's equations, gates in ONNX order: input, output, forget,
/// cell; σ for the first three, tanh for the cell and the output; zero initial state).
///
/// `gates` (`[steps, batch, 4·hidden]`) comes in holding each step's input projection plus bias
/// and leaves holding the activated gates; `recurrent` is `[hidden, 4·hidden]`. Writes every
/// step's `hidden` and `cells` state (`[steps, batch, hidden]` each), in time order whatever the
/// direction.
pub(crate) fn lstm_direction(
    shape: LstmShape,
    gates: &mut [f32],
    recurrent: &[f32],
    reverse: bool,
    hidden: &mut [f32],
    cells: &mut [f32],
) {
    assert_eq!(
        gates.len(),
        shape.steps * shape.gates_len(),
        "LSTM gates size"
    );
    assert_eq!(
        hidden.len(),
        shape.steps * shape.state_len(),
        "LSTM hidden size"
    );
    assert_eq!(
        cells.len(),
        shape.steps * shape.state_len(),
        "LSTM cells size"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for, checked just above.
            unsafe { lstm_direction_avx512(shape, gates, recurrent, reverse, hidden, cells) };
            return;
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            unsafe { lstm_direction_avx2(shape, gates, recurrent, reverse, hidden, cells) };
            return;
        }
    }
    lstm_direction_body::<64>(shape, gates, recurrent, reverse, hidden, cells);
}

/// [`lstm_direction_body`] compiled for wider vectors, so its activations and row sums run 8
/// or 16 lanes at a time, its row sums `BLOCK` outputs at once: eight vector registers.
macro_rules! lstm_direction_for {
    ($name:ident, $features:literal, $block:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name(
            shape: LstmShape,
            gates: &mut [f32],
            recurrent: &[f32],
            reverse: bool,
            hidden: &mut [f32],
            cells: &mut [f32],
        ) {
            lstm_direction_body::<$block>(shape, gates, recurrent, reverse, hidden, cells);
        }
    };
}

lstm_direction_for!(lstm_direction_avx2, "avx2,fma", 64);
lstm_direction_for!(lstm_direction_avx512, "avx512f,avx2,fma", 128);

#[inline(always)]
fn lstm_direction_body<const BLOCK: usize>(
    shape: LstmShape,
    gates: &mut [f32],
    recurrent: &[f32],
    reverse: bool,
    hidden: &mut [f32],
    cells: &mut [f32],
) {
    let (b, h) = (shape.batch, shape.hidden);
    let (sl, gl) = (shape.state_len(), shape.gates_len());
    let mut cell = vec![0.0; h];
    let mut previous: Option<usize> = None;
    for t in shape.order(reverse) {
        let step_gates = &mut gates[t * gl..(t + 1) * gl];
        if let Some(p) = previous {
            // gates[b×4h] += h_prev[b×h] · r[h×4h]
            let h_prev = &hidden[p * sl..(p + 1) * sl];
            if b <= FEW_ROWS {
                accumulate_rows::<BLOCK>(step_gates, h_prev, recurrent, 4 * h);
            } else {
                matmul(
                    b,
                    4 * h,
                    h,
                    step_gates,
                    true,
                    (h_prev, h, 1),
                    (recurrent, 4 * h, 1),
                );
            }
        }
        for row in 0..b {
            let g = &mut step_gates[row * 4 * h..(row + 1) * 4 * h];
            g[..3 * h].iter_mut().for_each(|v| *v = logistic(*v));
            g[3 * h..].iter_mut().for_each(|v| *v = tanh(*v));
            let (i, rest) = g.split_at(h);
            let (o, rest) = rest.split_at(h);
            let (f, candidate) = rest.split_at(h);
            match previous {
                Some(p) => {
                    let c_prev = &cells[p * sl + row * h..p * sl + (row + 1) * h];
                    for j in 0..h {
                        cell[j] = f[j] * c_prev[j] + i[j] * candidate[j];
                    }
                }
                None => {
                    for j in 0..h {
                        cell[j] = i[j] * candidate[j];
                    }
                }
            }
            let at = t * sl + row * h;
            cells[at..at + h].copy_from_slice(&cell);
            let out = &mut hidden[at..at + h];
            for j in 0..h {
                out[j] = o[j] * tanh(cell[j]);
            }
        }
        previous = Some(t);
    }
}
/// Up to this many rows (a served line or a few), [`accumulate_rows`] beats the GEMM, whose
/// packing and dispatch cost more than the product itself.
const FEW_ROWS: usize = 4;

/// `dst[b×n] += lhs[b×k] · rhs[k×n]` as a sum of scaled rows of `rhs`: contiguous, so it
/// vectorises (at the width of the caller's target features: it is always inlined), and with no
/// packing. `BLOCK` outputs are summed at once, in registers, so each pass over `rhs` only loads.
#[inline(always)]
fn accumulate_rows<const BLOCK: usize>(dst: &mut [f32], lhs: &[f32], rhs: &[f32], n: usize) {
    let k = rhs.len() / n;
    for (out, row) in dst.chunks_exact_mut(n).zip(lhs.chunks_exact(k)) {
        for start in (0..n).step_by(BLOCK) {
            let width = BLOCK.min(n - start);
            if width < BLOCK {
                for (kk, &a) in row.iter().enumerate() {
                    let r = &rhs[kk * n + start..kk * n + start + width];
                    for (o, &v) in out[start..start + width].iter_mut().zip(r) {
                        *o = a.mul_add(v, *o);
                    }
                }
                continue;
            }
            let mut sum = [0.0f32; BLOCK];
            sum.copy_from_slice(&out[start..start + BLOCK]);
            for (kk, &a) in row.iter().enumerate() {
                let r: &[f32; BLOCK] = rhs[kk * n + start..kk * n + start + BLOCK]
                    .try_into()
                    .expect("a full block");
                for (o, &v) in sum.iter_mut().zip(r) {
                    *o = a.mul_add(v, *o);
                }
            }
            out[start..start + BLOCK].copy_from_slice(&sum);
        }
    }
}

/// `x − max − ln Σ e^(x − max)` over each `row`-long run of `values`, in place: a log-softmax
/// that stays finite however far a value lies below its row's largest.
pub(crate) fn log_softmax_rows(values: &mut [f32], row: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for, checked just above.
        unsafe { log_softmax_rows_avx2(values, row) };
        return;
    }
    log_softmax_rows_body(values, row);
}

/// [`log_softmax_rows_body`] with hardware FMA and rounding: without them `mul_add` and
/// `round` in [`exp`] are library calls, a hundred times slower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn log_softmax_rows_avx2(values: &mut [f32], row: usize) {
    log_softmax_rows_body(values, row);
}

#[inline(always)]
fn log_softmax_rows_body(values: &mut [f32], row: usize) {
    /// Partial maxima and sums kept apart, so that they and the exponentials vectorise.
    const LANES: usize = 16;
    let mut exps = vec![0.0f32; row];
    for row in values.chunks_exact_mut(row) {
        let mut maxima = [f32::NEG_INFINITY; LANES];
        for chunk in row.chunks(LANES) {
            for (lane, &v) in maxima.iter_mut().zip(chunk) {
                *lane = lane.max(v);
            }
        }
        let max = maxima.into_iter().fold(f32::NEG_INFINITY, f32::max);
        for (e, &v) in exps.iter_mut().zip(row.iter()) {
            *e = exp(v - max);
        }
        let mut lanes = [0.0f32; LANES];
        let chunks = exps.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().sum();
        for chunk in chunks {
            for (lane, &e) in lanes.iter_mut().zip(chunk) {
                *lane += e;
            }
        }
        let shift = max + (lanes.iter().sum::<f32>() + tail).ln();
        row.iter_mut().for_each(|v| *v -= shift);
    }
}

/// σ(v) through [`exp`]: vectorisable, within a few ulp of `1 / (1 + e^-v)`.
#[inline(always)]
pub(crate) fn logistic(v: f32) -> f32 {
    1.0 / (1.0 + exp(-v))
}

/// tanh(v) = 1 − 2 / (e^{2v} + 1) through [`exp`]: saturates cleanly at ±1, absolute error
/// about 1e-7 near zero.
#[inline(always)]
pub(crate) fn tanh(v: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * v) + 1.0)
}

/// e^v in plain arithmetic (Cephes' `expf`: 2^n · a degree-6 polynomial of the remainder, about
/// 1 ulp on the clamped range), so that loops over slices vectorise where `f32::exp`, a libm
/// call, cannot.
#[inline(always)]
pub(crate) fn exp(v: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let v = v.clamp(-87.3, 88.3);
    let n = (v * LOG2_E).round();
    let r = v - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let p = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vectorisable_activations_match_the_library_ones() {
        let (mut exp_error, mut logistic_error, mut tanh_error) = (0.0f32, 0.0f32, 0.0f32);
        for i in -40_000..=40_000 {
            let v = i as f32 * 0.002;
            exp_error = exp_error.max(((exp(v) - v.exp()) / v.exp()).abs());
            logistic_error = logistic_error.max((logistic(v) - 1.0 / (1.0 + (-v).exp())).abs());
            tanh_error = tanh_error.max((tanh(v) - v.tanh()).abs());
        }
        assert!(exp_error < 5e-7, "exp: relative error {exp_error}");
        assert!(logistic_error < 2e-7, "σ: error {logistic_error}");
        assert!(tanh_error < 3e-7, "tanh: error {tanh_error}");
        assert!(
            (0.0..1e-30).contains(&exp(-200.0)),
            "underflow stays finite and tiny"
        );
        assert!(exp(200.0).is_finite() && tanh(200.0) == 1.0 && tanh(-200.0) == -1.0);
        assert!(logistic(-200.0) >= 0.0 && logistic(200.0) == 1.0);
    }

    /// The kernels this CPU dispatches to (AVX-512 or AVX2 with FMA, on x86-64) against the
    /// portable build every x86-64 CPU can run: the same bits, so a line read alone, or with up
    /// to `FEW_ROWS` others, does not depend on the vector width. Wider batches go through the
    /// `gemm` crate (see docs/decisions.md 9).
    #[test]
    fn the_dispatched_kernels_give_the_portable_kernels_bits() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (batch, hidden) in [(1, 64), (3, 70), (4, 256), (7, 65)] {
            let shape = LstmShape {
                steps: 9,
                batch,
                hidden,
            };
            let gates: Vec<f32> = (0..shape.steps * shape.gates_len())
                .map(|i| (i as f32 * 0.37).sin() * 2.0)
                .collect();
            let recurrent: Vec<f32> = (0..hidden * 4 * hidden)
                .map(|i| (i as f32 * 0.11).cos() * 0.2)
                .collect();
            let run = |dispatched: bool, reverse: bool| {
                let (mut gates, len) = (gates.clone(), shape.steps * shape.state_len());
                let (mut hidden, mut cells) = (vec![0.0; len], vec![0.0; len]);
                if dispatched {
                    lstm_direction(
                        shape,
                        &mut gates,
                        &recurrent,
                        reverse,
                        &mut hidden,
                        &mut cells,
                    );
                } else {
                    lstm_direction_body::<64>(
                        shape,
                        &mut gates,
                        &recurrent,
                        reverse,
                        &mut hidden,
                        &mut cells,
                    );
                }
                (bits(&hidden), bits(&cells))
            };
            for reverse in [false, true] {
                assert!(
                    run(true, reverse) == run(false, reverse),
                    "batch {batch}, hidden {hidden}, reverse {reverse}"
                );
            }
        }
        let logits: Vec<f32> = (0..7 * 81)
            .map(|i| (i as f32 * 0.53).sin() * 30.0)
            .collect();
        let (mut dispatched, mut portable) = (logits.clone(), logits);
        log_softmax_rows(&mut dispatched, 81);
        log_softmax_rows_body(&mut portable, 81);
        assert!(bits(&dispatched) == bits(&portable), "log-softmax");
    }

    #[test]
    fn summing_scaled_rows_equals_the_gemm() {
        let (b, k, n) = (3, 37, 4 * 33);
        let lhs: Vec<f32> = (0..b * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.7).cos()).collect();
        let start: Vec<f32> = (0..b * n).map(|i| i as f32 * 0.01).collect();
        let mut rows = start.clone();
        accumulate_rows::<64>(&mut rows, &lhs, &rhs, n);
        let mut gemm = start;
        matmul(b, n, k, &mut gemm, true, (&lhs, k, 1), (&rhs, n, 1));
        let diff = rows
            .iter()
            .zip(&gemm)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-4, "differs from the GEMM by {diff}");
    }
}
