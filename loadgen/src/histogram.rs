//! A small HDR-style (log-linear) histogram of round-trip times, in microseconds.
//!
//! Values below 128 get one bucket each (exact). Above that, every power-of-two range
//! `[2^k, 2^(k+1))` is split into 128 equal buckets, so any recorded value is known to within
//! 1/128 (< 0.8 %) of itself. That is ~7,400 `u64` counters (~58 KiB) whatever the number of
//! samples, recording is O(1), and a percentile is one pass over the counters, cheap enough to
//! compute for the live progress line every second. The maximum is also kept exactly.

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets: 128 exact ones, then 128 for each of the exponents 7..=63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) << SUB_BITS;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact), or 0 if none.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at percentile `p` (0..=100): the smallest bucket holding the `ceil(p% * count)`-th
    /// smallest sample, reported as that bucket's highest value (never above the exact maximum).
    /// 0 if nothing was recorded.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_high(bucket).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket a value falls into.
fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = msb - SUB_BITS;
    // The top SUB_BITS+1 bits of v are SUB + sub, with sub in 0..SUB.
    let sub = (v >> shift) - SUB;
    (((shift + 1) as usize) << SUB_BITS) + sub as usize
}

/// The highest value that falls into `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    if bucket < SUB as usize {
        return bucket as u64;
    }
    let shift = (bucket >> SUB_BITS) as u32 - 1;
    let sub = (bucket as u64) & (SUB - 1);
    let low = (SUB + sub) << shift;
    low + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        // Every bucket boundary: the next value after a bucket's high end starts the next bucket.
        for b in 0..BUCKETS - 1 {
            let high = bucket_high(b);
            assert_eq!(bucket_of(high), b, "high end of bucket {b}");
            assert_eq!(bucket_of(high + 1), b + 1, "start of bucket {}", b + 1);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
        // Relative error bound.
        for v in [200u64, 1_000, 12_345, 999_999, 1 << 40] {
            let high = bucket_high(bucket_of(v));
            assert!(
                high >= v && (high - v) as f64 <= v as f64 / 128.0,
                "{v} -> {high}"
            );
        }
    }

    #[test]
    fn percentiles() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), 0);
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile(50.0), 50);
        assert_eq!(h.percentile(99.0), 99);
        assert_eq!(h.percentile(100.0), 100);
        assert_eq!(h.max(), 100);

        let mut h = Histogram::new();
        for _ in 0..99 {
            h.record(1_000);
        }
        h.record(50_000);
        let p50 = h.percentile(50.0);
        assert!((1_000..=1_008).contains(&p50), "{p50}");
        assert!(h.percentile(99.0) <= 1_008);
        assert_eq!(h.percentile(99.9), 50_000); // capped at the exact max
        assert_eq!(h.max(), 50_000);
    }
}
