//! The min/max envelope of the overview, built while decoding without
//! knowing the track's length: buckets of one frame to start with, merged
//! pairwise (their length doubled) whenever there are [`MAX_FINE`] of
//! them, then merged down to at most [`MAX_PAIRS`] at the end.

/// At most this many `[min, max]` pairs in the overview (API.md §6).
pub(crate) const MAX_PAIRS: usize = 2_000;
/// Buckets held while decoding before a pairwise merge.
const MAX_FINE: usize = 2 * MAX_PAIRS;

pub(crate) struct Envelope {
    /// Frames per bucket; a power of two.
    bucket_frames: u64,
    buckets: Vec<[f32; 2]>,
    /// The bucket being filled: its frames so far and their extremes.
    fill: u64,
    current: [f32; 2],
}

impl Envelope {
    pub fn new() -> Envelope {
        Envelope {
            bucket_frames: 1,
            buckets: Vec::with_capacity(MAX_FINE),
            fill: 0,
            current: [f32::INFINITY, f32::NEG_INFINITY],
        }
    }

    /// Takes the next frames (one slice per channel, all of one length).
    pub fn push(&mut self, planes: &[&[f32]]) {
        let frames = planes.first().map_or(0, |p| p.len());
        let mut at = 0;
        while at < frames {
            let room = usize::try_from(self.bucket_frames - self.fill).unwrap_or(usize::MAX);
            let take = room.min(frames - at);
            let [mut lo, mut hi] = self.current;
            for plane in planes {
                for &x in &plane[at..at + take] {
                    lo = lo.min(x);
                    hi = hi.max(x);
                }
            }
            self.current = [lo, hi];
            self.fill += take as u64;
            at += take;
            if self.fill == self.bucket_frames {
                self.close_bucket();
            }
        }
    }

    fn close_bucket(&mut self) {
        let [lo, hi] = self.current;
        // A bucket of NaNs only (never from a real decoder) reads as zero.
        let pair = if lo <= hi {
            [lo.clamp(-1.0, 1.0), hi.clamp(-1.0, 1.0)]
        } else {
            [0.0, 0.0]
        };
        self.buckets.push(pair);
        self.fill = 0;
        self.current = [f32::INFINITY, f32::NEG_INFINITY];
        if self.buckets.len() >= MAX_FINE {
            self.halve();
        }
    }

    /// Merges neighbours pairwise (an odd last bucket stays alone).
    fn halve(&mut self) {
        let merged: Vec<[f32; 2]> = self
            .buckets
            .chunks(2)
            .map(|pair| {
                pair.iter()
                    .fold([f32::INFINITY, f32::NEG_INFINITY], |[lo, hi], b| {
                        [lo.min(b[0]), hi.max(b[1])]
                    })
            })
            .collect();
        self.buckets = merged;
        self.bucket_frames *= 2;
    }

    /// The envelope (at most [`MAX_PAIRS`] pairs over equal slices, the
    /// last one possibly shorter) and its step in frames.
    pub fn finish(mut self) -> (Vec<[f32; 2]>, u64) {
        if self.fill > 0 {
            // The partial bucket, whatever its length: it ends the track.
            self.close_bucket();
        }
        while self.buckets.len() > MAX_PAIRS {
            self.halve();
        }
        (self.buckets, self.bucket_frames)
    }
}
