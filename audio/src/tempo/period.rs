//! The periodicity half of the tempo estimator: from a finished onset
//! envelope to a beat period and how sure the estimate is.
//!
//! 1. The envelope's local mean (±1 s) is taken off and what stays above it
//!    kept: a train of onset pulses on a zero floor.
//! 2. Its autocorrelation (through `realfft`), unbiased and normalised so
//!    lag 0 is 1, up to 16 s or half the track.
//! 3. A comb score for every period on a 0.05-frame grid from 480 to
//!    40 BPM: the mean of the autocorrelation at the first 8 multiples of
//!    the period (at fractional lags, cubic interpolation). A fixed count
//!    of multiples, not a fixed span of lags: a 60 BPM click read at 120
//!    hits a pulse on only half its multiples, so it scores half.
//! 4. The metrical level: the fastest strong comb peak (within `TATUM_SHARE`
//!    of the best and an integer fraction of it) is the tatum; the beat
//!    starts there and doubles while it is above 240 BPM, or while its
//!    pulses alternate strong/weak (the autocorrelation at its odd multiples
//!    falls below `ALTERNATION` times that at its even ones: the off-beat
//!    eighths of a drum pattern are hi-hats alone, its beats kick or snare;
//!    the beats of a click track are all alike).
//! 5. The period is refined by least squares over the autocorrelation's
//!    peaks at up to 32 multiples of it (each found by parabolic
//!    interpolation), so a 120 BPM click reads 120.0, not 117.5 or 123.
//! 6. Confidence: the comb score of the beat minus the median comb score
//!    over 40–240 BPM (a correlation-like number: 1 for a perfect click
//!    track, near 0 for noise).

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

/// Slowest and fastest tempo reported.
pub const MIN_BPM: f64 = 40.0;
pub const MAX_BPM: f64 = 240.0;
/// The fastest pulse looked for as a tatum (eighths of a fast beat).
const TATUM_MAX_BPM: f64 = 480.0;
/// Autocorrelation lags kept, in seconds.
const LAG_SECONDS: f64 = 16.0;
/// Half-width of the local mean taken off the envelope, seconds.
const LOCAL_MEAN_SECONDS: f64 = 1.0;
/// Multiples of a period in its comb score.
const COMB_MULTIPLES: usize = 8;
/// Multiples used to refine the period.
const REFINE_MULTIPLES: usize = 32;
/// The comb grid step, frames.
const GRID_STEP: f64 = 0.05;
/// A comb peak this close to the best one can be the tatum.
const TATUM_SHARE: f64 = 0.6;
/// Odd multiples weaker than this share of the even ones: the level
/// alternates strong and weak, the beat is twice as slow. Eighths whose
/// off-beats are hi-hats alone alternate deeply (0.27 on the aubio corpus);
/// quarters whose beats alternate kick and a weaker snare only moderately
/// (0.59 for 180 BPM, 66 % swing, snare at half the kick, which 0.75 read
/// as 90; 0.76–1.0 for the other beats).
const ALTERNATION: f64 = 0.5;

/// What the periodicity analysis finds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub bpm: f64,
    pub confidence: f64,
    /// The share of the track that carries the beat (see [`support`]).
    pub support: f64,
}

/// The beat of `envelope` (onset strength at `frame_rate` frames per
/// second), or `None` when it has no onsets at all.
pub fn estimate(envelope: &[f32], frame_rate: f64) -> Option<Reading> {
    let onsets = onsets(envelope, frame_rate);
    let pulses = pulses(&onsets)?;
    let lags = ((frame_rate * LAG_SECONDS) as usize).min(pulses.len() / 2);
    let acf = autocorrelation(&pulses, lags)?;
    let tau_min = frame_rate * 60.0 / TATUM_MAX_BPM;
    let tau_max = (frame_rate * 60.0 / MIN_BPM).min((acf.len() - 1) as f64);
    if !(tau_min >= 1.0 && tau_max > tau_min) {
        return None;
    }
    let steps = ((tau_max - tau_min) / GRID_STEP) as usize;
    let grid: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let tau = tau_min + i as f64 * GRID_STEP;
            (tau, comb(&acf, tau))
        })
        .collect();
    let best = grid.iter().copied().fold(
        (0.0, f64::NEG_INFINITY),
        |a, b| if b.1 > a.1 { b } else { a },
    );
    if best.1.is_nan() || best.1 <= 0.0 {
        return None;
    }
    // The tatum: the fastest strong peak that divides the best one.
    let tatum = grid
        .windows(3)
        .filter(|w| w[1].1 >= w[0].1 && w[1].1 > w[2].1 && w[1].1 >= TATUM_SHARE * best.1)
        .map(|w| w[1].0)
        .find(|&tau| {
            let ratio = best.0 / tau;
            (ratio - ratio.round()).abs() <= 0.03 * ratio.round()
        })
        .unwrap_or(best.0);
    let slowest = frame_rate * 60.0 / MIN_BPM;
    let mut beat = tatum;
    while 2.0 * beat <= slowest
        && (frame_rate * 60.0 / beat > MAX_BPM || alternation(&acf, beat) < ALTERNATION)
    {
        beat *= 2.0;
    }
    if frame_rate * 60.0 / beat > MAX_BPM {
        return None;
    }
    let beat = refine(&acf, beat);
    let median = {
        let mut in_range: Vec<f64> = grid
            .iter()
            .filter(|(tau, _)| frame_rate * 60.0 / tau <= MAX_BPM)
            .map(|&(_, c)| c)
            .collect();
        in_range.sort_by(f64::total_cmp);
        in_range.get(in_range.len() / 2).copied().unwrap_or(0.0)
    };
    let support = support(&onsets, beat);
    let confidence = comb(&acf, beat) - median;
    let bpm = frame_rate * 60.0 / beat;
    (bpm.is_finite() && confidence.is_finite()).then_some(Reading {
        bpm,
        confidence,
        support,
    })
}

/// The onsets: the envelope less its local mean, floored at zero.
fn onsets(envelope: &[f32], frame_rate: f64) -> Vec<f64> {
    let n = envelope.len();
    let half = ((frame_rate * LOCAL_MEAN_SECONDS) as usize).max(1);
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0f64);
    for &x in envelope {
        let last = prefix.last().copied().unwrap_or(0.0);
        prefix.push(last + f64::from(x));
    }
    (0..n)
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            let mean = (prefix[hi] - prefix[lo]) / (hi - lo) as f64;
            (f64::from(envelope[i]) - mean).max(0.0)
        })
        .collect()
}

/// The onset pulses: the onsets less their mean. `None` when nothing is
/// left.
fn pulses(onsets: &[f64]) -> Option<Vec<f64>> {
    let n = onsets.len();
    let mut out = onsets.to_vec();
    let mean = out.iter().sum::<f64>() / n.max(1) as f64;
    let mut energy = 0.0;
    for x in &mut out {
        *x -= mean;
        energy += *x * *x;
    }
    (energy.is_finite() && energy > 1e-9 * n as f64).then_some(out)
}

/// Unbiased autocorrelation of `x` at lags 0..=`lags`, normalised so lag 0
/// is 1.
fn autocorrelation(x: &[f64], lags: usize) -> Option<Vec<f64>> {
    let n = x.len();
    if n < 2 || lags == 0 {
        return None;
    }
    let size = (n + lags + 1).next_power_of_two();
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(size);
    let inverse = planner.plan_fft_inverse(size);
    let mut input = forward.make_input_vec();
    input[..n].copy_from_slice(x);
    let mut spectrum = forward.make_output_vec();
    forward.process(&mut input, &mut spectrum).ok()?;
    for c in &mut spectrum {
        *c = Complex::new(c.norm_sqr(), 0.0);
    }
    let mut output = inverse.make_output_vec();
    inverse.process(&mut spectrum, &mut output).ok()?;
    let zero = output[0] / n as f64;
    if zero.is_nan() || zero <= 0.0 {
        return None;
    }
    Some(
        (0..=lags)
            .map(|lag| output[lag] / (n - lag) as f64 / zero)
            .collect(),
    )
}

/// `acf` at a fractional lag (Catmull-Rom), 0 outside.
fn at(acf: &[f64], lag: f64) -> f64 {
    if lag.is_nan() || lag < 0.0 || lag > (acf.len() - 1) as f64 {
        return 0.0;
    }
    let i = lag.floor() as usize;
    let t = lag - i as f64;
    let get = |j: isize| -> f64 {
        let j = j.clamp(0, acf.len() as isize - 1) as usize;
        acf[j]
    };
    let i = i as isize;
    let (p0, p1, p2, p3) = (get(i - 1), get(i), get(i + 1), get(i + 2));
    p1 + 0.5
        * t
        * (p2 - p0 + t * (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3 + t * (3.0 * (p1 - p2) + p3 - p0)))
}

/// The comb score of period `tau`: the mean autocorrelation at its first
/// multiples (as many of the `COMB_MULTIPLES` as the lags reach).
fn comb(acf: &[f64], tau: f64) -> f64 {
    let reach = ((acf.len() - 1) as f64 / tau) as usize;
    let count = reach.min(COMB_MULTIPLES);
    if count == 0 {
        return 0.0;
    }
    (1..=count).map(|k| at(acf, k as f64 * tau)).sum::<f64>() / count as f64
}

/// How alike the pulses of level `tau` are: the autocorrelation at its odd
/// multiples over that at its even ones (1 when every pulse is alike, 0
/// when every other one is missing). 1 when the lags do not reach 2τ or
/// the even multiples do not correlate.
fn alternation(acf: &[f64], tau: f64) -> f64 {
    let reach = ((acf.len() - 1) as f64 / (2.0 * tau)) as usize;
    let pairs = reach.min(COMB_MULTIPLES / 2);
    if pairs == 0 {
        return 1.0;
    }
    let (mut odd, mut even) = (0.0, 0.0);
    for j in 1..=pairs {
        odd += at(acf, (2 * j - 1) as f64 * tau);
        even += at(acf, (2 * j) as f64 * tau);
    }
    if even > 0.0 {
        odd / even
    } else {
        1.0
    }
}

/// The period near `tau` that best fits the autocorrelation's peaks at its
/// multiples: each peak looked for within ±4 % of a period (at least ±2
/// frames) of where the estimate so far puts it, and kept when it is an
/// interior maximum at least half as high as the comb score; each placed
/// by parabolic interpolation, the period refitted by least squares
/// through the origin after each.
fn refine(acf: &[f64], tau: f64) -> f64 {
    let last = acf.len() - 1;
    let (mut sum_kl, mut sum_kk) = (0.0, 0.0);
    let mut estimate = tau;
    let floor = 0.5 * comb(acf, tau);
    for k in 1..=REFINE_MULTIPLES {
        let k = k as f64;
        let expected = k * estimate;
        let reach = (0.04 * estimate).max(2.0);
        let lo = (expected - reach).floor().max(1.0) as usize;
        let hi = ((expected + reach).ceil() as usize).min(last.saturating_sub(1));
        if lo >= hi {
            break;
        }
        let Some(peak) = (lo..=hi).max_by(|&a, &b| acf[a].total_cmp(&acf[b])) else {
            break;
        };
        if peak == lo || peak == hi || acf[peak] <= floor.max(0.0) {
            continue;
        }
        let (a, b, c) = (acf[peak - 1], acf[peak], acf[peak + 1]);
        let denominator = a - 2.0 * b + c;
        let offset = if denominator < 0.0 {
            (0.5 * (a - c) / denominator).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let lag = peak as f64 + offset;
        sum_kl += k * lag;
        sum_kk += k * k;
        estimate = sum_kl / sum_kk;
    }
    if estimate.is_finite() && (estimate / tau - 1.0).abs() < 0.05 {
        estimate
    } else {
        tau
    }
}

/// Segments of this many beats are checked for the beat on their own.
const SUPPORT_BEATS: f64 = 2.0;
/// A segment whose onsets correlate this well with those a beat later
/// carries the beat.
const SUPPORT_CORRELATION: f64 = 0.3;

/// The share of the track that carries a beat of period `tau` frames: the
/// onsets cut into segments of `SUPPORT_BEATS` beats, each segment's
/// normalised correlation with the onsets one period later (the best over
/// ±max(2 frames, 5 %) of the period; Pearson, so a steady noise floor
/// correlates near 0), the share of segments where that is at least
/// `SUPPORT_CORRELATION`. About 1 for a beat all through the track; at
/// most a few segments' worth for a tone with a gap or two, a few hits in
/// silence, a step in level: their onsets, however periodic the
/// autocorrelation of the whole track makes them look, have no partner a
/// beat later in most of it.
fn support(onsets: &[f64], tau: f64) -> f64 {
    let n = onsets.len();
    let length = (SUPPORT_BEATS * tau).round().max(1.0) as usize;
    let segments = (n / length).max(1);
    let reach = (0.05 * tau).max(2.0);
    let lo = (tau - reach).floor().max(1.0) as usize;
    let hi = (tau + reach).ceil() as usize;
    let mut supported = 0;
    for s in 0..segments {
        let start = s * length;
        let end = if s + 1 == segments { n } else { start + length };
        let mut best = 0.0f64;
        for lag in lo..=hi {
            let stop = end.min(n.saturating_sub(lag));
            if stop <= start + 1 {
                continue;
            }
            let count = (stop - start) as f64;
            let mx = onsets[start..stop].iter().sum::<f64>() / count;
            let my = onsets[start + lag..stop + lag].iter().sum::<f64>() / count;
            let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
            for i in start..stop {
                let (x, y) = (onsets[i] - mx, onsets[i + lag] - my);
                xy += x * y;
                xx += x * x;
                yy += y * y;
            }
            if xx > 0.0 && yy > 0.0 {
                best = best.max(xy / (xx * yy).sqrt());
            }
        }
        if best >= SUPPORT_CORRELATION {
            supported += 1;
        }
    }
    supported as f64 / segments as f64
}
