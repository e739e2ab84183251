//! How far apart two tensors' values are: the one definition that `diff --values`, the maps
//! and the `threshold` of mix rules share, so a number read off a map is the number a
//! threshold is compared with.
//!
//! The relative distance of A from B is `‖A − B‖ / ‖B‖` (Frobenius norms of the
//! dequantized values); the cosine similarity is `⟨A, B⟩ / (‖A‖ ‖B‖)`. Both come from four
//! sums ([`Sums`]) taken in f64 over f32 values, row by row:
//!
//! - within a row, element i goes to accumulator `i % LANES` (in increasing i), and the
//!   lanes are added in a fixed tree ([`Sums::row`]): the loop vectorizes (with AVX2 where
//!   the processor has it), and the result is a function of the row alone, the same on
//!   every processor;
//! - rows are added one after another in row order ([`Sums::add`]), so a tensor's (or an
//!   expert's) sums do not depend on how rows are chunked or on the number of threads.

#![warn(missing_docs)]

/// Accumulators per sum within a row (see the module comment).
pub const LANES: usize = 8;

/// The sums a distance and a cosine are made of, for a pair (A, B) of equally long runs of
/// values: `Σa²`, `Σb²`, `Σab` and `Σ(a − b)²`, in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sums {
    /// `Σ a²`.
    pub a2: f64,
    /// `Σ b²`.
    pub b2: f64,
    /// `Σ a·b`.
    pub ab: f64,
    /// `Σ (a − b)²`, computed from the differences (not from the other three, which would
    /// cancel catastrophically when A and B are close).
    pub d2: f64,
}

/// The lanes of one sum, added in a fixed order.
fn reduce(l: [f64; LANES]) -> f64 {
    ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
}

/// Add the values past the last whole group of LANES into their lanes, and the lanes in
/// their fixed tree: the end of every version of the kernel.
fn finish(mut acc: [[f64; LANES]; 4], ra: &[f32], rb: &[f32]) -> Sums {
    for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        let (x, y) = (x as f64, y as f64);
        let d = x - y;
        acc[0][l] += x * x;
        acc[1][l] += y * y;
        acc[2][l] += x * y;
        acc[3][l] += d * d;
    }
    Sums {
        a2: reduce(acc[0]),
        b2: reduce(acc[1]),
        ab: reduce(acc[2]),
        d2: reduce(acc[3]),
    }
}

/// The kernel in plain Rust: lane l of each sum takes elements l, l + LANES, ...
fn row_lanes(a: &[f32], b: &[f32]) -> Sums {
    let mut acc = [[0f64; LANES]; 4];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            let (x, y) = (x[l] as f64, y[l] as f64);
            let d = x - y;
            acc[0][l] += x * x;
            acc[1][l] += y * y;
            acc[2][l] += x * y;
            acc[3][l] += d * d;
        }
    }
    finish(acc, ra, rb)
}

/// The same kernel with AVX2: two registers hold lanes 0-3 and 4-7 of a sum. The same
/// operations on the same lanes in the same order (a multiply, then an add: no fused
/// multiply-add), so the same bits as [`row_lanes`]. (An AVX-512 version, one register a
/// sum, measured 15 % faster in `diff --values`, but its intrinsics need Rust 1.89.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(a: &[f32], b: &[f32]) -> Sums {
    use std::arch::x86_64::*;
    /// Lanes `at..at + 4` of the four sums, from 4 values of A and B at `i + at`.
    #[target_feature(enable = "avx2")]
    fn step(v: &mut [__m256d; 4], a: &[f32], b: &[f32], i: usize) {
        // SAFETY: the caller passes i + 4 <= a.len() == b.len(): 4 floats are readable.
        let (x, y) = unsafe {
            (
                _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(i))),
                _mm256_cvtps_pd(_mm_loadu_ps(b.as_ptr().add(i))),
            )
        };
        let d = _mm256_sub_pd(x, y);
        v[0] = _mm256_add_pd(v[0], _mm256_mul_pd(x, x));
        v[1] = _mm256_add_pd(v[1], _mm256_mul_pd(y, y));
        v[2] = _mm256_add_pd(v[2], _mm256_mul_pd(x, y));
        v[3] = _mm256_add_pd(v[3], _mm256_mul_pd(d, d));
    }
    let n = a.len() / LANES * LANES;
    let (mut lo, mut hi) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
    for i in (0..n).step_by(LANES) {
        step(&mut lo, a, b, i);
        step(&mut hi, a, b, i + 4);
    }
    let mut acc = [[0f64; LANES]; 4];
    for (lanes, (l, h)) in acc.iter_mut().zip(lo.into_iter().zip(hi)) {
        // SAFETY: `lanes` holds 8 f64: the stores write 0-3 and 4-7.
        unsafe {
            _mm256_storeu_pd(lanes.as_mut_ptr(), l);
            _mm256_storeu_pd(lanes.as_mut_ptr().add(4), h);
        }
    }
    finish(acc, &a[n..], &b[n..])
}

impl Sums {
    /// The sums of one row: `a` and `b` hold the same number of values (a row of A and the
    /// same row of B). Panics if their lengths differ.
    pub fn row(a: &[f32], b: &[f32]) -> Sums {
        assert_eq!(a.len(), b.len(), "rows of one length");
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the processor has AVX2 (checked just above).
                return unsafe { row_avx2(a, b) };
            }
        }
        row_lanes(a, b)
    }

    /// Add the sums of the next rows.
    pub fn add(&mut self, next: &Sums) {
        self.a2 += next.a2;
        self.b2 += next.b2;
        self.ab += next.ab;
        self.d2 += next.d2;
    }

    /// `‖A − B‖ / ‖B‖`, see [`relative_distance`].
    pub fn distance(&self) -> f64 {
        relative_distance(self.d2, self.b2)
    }

    /// `⟨A, B⟩ / (‖A‖ ‖B‖)`, clamped to [-1, 1]. Two all-zero runs are alike (1); a zero
    /// run against a non-zero one is orthogonal (0). NaN if a value is NaN.
    pub fn cosine(&self) -> f64 {
        // sqrt(a2 b2), not sqrt(a2) sqrt(b2): when A = B, sqrt(x²) is exactly x, so the
        // cosine of equal runs is exactly 1.
        let mut norms = (self.a2 * self.b2).sqrt();
        if norms.is_infinite() {
            norms = self.a2.sqrt() * self.b2.sqrt();
        }
        if self.ab.is_nan() || norms.is_nan() {
            f64::NAN
        } else if norms == 0.0 {
            if self.a2 == 0.0 && self.b2 == 0.0 {
                1.0
            } else {
                0.0
            }
        } else {
            (self.ab / norms).clamp(-1.0, 1.0)
        }
    }
}

/// The relative distance `sqrt(diff_sq) / sqrt(base_sq)` from `Σ(a − b)²` and `Σb²`: 0 when
/// the values are equal (even all zeros), infinity when only the base B is all zeros, NaN
/// when a value is NaN (so NaN is never "close enough" for a threshold).
pub fn relative_distance(diff_sq: f64, base_sq: f64) -> f64 {
    let (d, base) = (diff_sq.sqrt(), base_sq.sqrt());
    if d.is_nan() || base.is_nan() {
        f64::NAN
    } else if d == 0.0 {
        0.0
    } else if base == 0.0 {
        f64::INFINITY
    } else {
        d / base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written plainly: per lane, then the same fixed tree.
    fn naive(a: &[f32], b: &[f32]) -> Sums {
        let mut l = [[0f64; LANES]; 4];
        for i in 0..a.len() {
            let (x, y) = (a[i] as f64, b[i] as f64);
            l[0][i % LANES] += x * x;
            l[1][i % LANES] += y * y;
            l[2][i % LANES] += x * y;
            l[3][i % LANES] += (x - y) * (x - y);
        }
        Sums {
            a2: reduce(l[0]),
            b2: reduce(l[1]),
            ab: reduce(l[2]),
            d2: reduce(l[3]),
        }
    }

    fn data(seed: u32, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn rows_of_any_length_follow_the_definition() {
        for n in [0, 1, 7, 8, 9, 31, 256, 1000] {
            let (a, b) = (data(1, n), data(2, n));
            assert_eq!(Sums::row(&a, &b), naive(&a, &b), "{n}");
        }
    }

    #[test]
    fn every_version_of_the_kernel_gives_the_same_bits() {
        for n in [0, 5, 8, 13, 7168] {
            let (a, b) = (data(5, n), data(6, n));
            let want = row_lanes(&a, &b);
            assert_eq!(naive(&a, &b), want, "{n}");
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is there.
                    assert_eq!(unsafe { row_avx2(&a, &b) }, want, "{n}");
                }
            }
        }
    }

    #[test]
    fn distances_and_cosines() {
        let b = [3.0f32, 4.0];
        // A = B: distance 0, cosine 1.
        let s = Sums::row(&b, &b);
        assert_eq!((s.distance(), s.cosine()), (0.0, 1.0));
        let x: Vec<f32> = data(7, 1000);
        assert_eq!(Sums::row(&x, &x).cosine(), 1.0);
        // A = B/2: ‖A − B‖ = 2.5, ‖B‖ = 5; same direction.
        let s = Sums::row(&[1.5, 2.0], &b);
        assert_eq!(s.distance(), 0.5);
        assert!((s.cosine() - 1.0).abs() < 1e-15);
        // Orthogonal, same norm: distance √2, cosine 0. Opposite: distance 2, cosine -1.
        let s = Sums::row(&[-4.0, 3.0], &b);
        assert!((s.distance() - 2f64.sqrt()).abs() < 1e-15 && s.cosine() == 0.0);
        let s = Sums::row(&[-3.0, -4.0], &b);
        assert_eq!((s.distance(), s.cosine()), (2.0, -1.0));
    }

    #[test]
    fn zeros_and_nan() {
        let z = [0.0f32; 4];
        let s = Sums::row(&z, &z);
        assert_eq!((s.distance(), s.cosine()), (0.0, 1.0));
        let s = Sums::row(&[1.0, 0.0, 0.0, 0.0], &z);
        assert_eq!((s.distance(), s.cosine()), (f64::INFINITY, 0.0));
        let s = Sums::row(&z, &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!((s.distance(), s.cosine()), (1.0, 0.0));
        let s = Sums::row(&[f32::NAN, 0.0, 0.0, 0.0], &[1.0, 0.0, 0.0, 0.0]);
        assert!(s.distance().is_nan() && s.cosine().is_nan());
        assert!(relative_distance(f64::NAN, 0.0).is_nan());
    }

    #[test]
    fn rows_add_in_order_whatever_the_chunking() {
        let (a, b) = (data(3, 64 * 10), data(4, 64 * 10));
        let rows: Vec<Sums> = a
            .chunks(64)
            .zip(b.chunks(64))
            .map(|(x, y)| Sums::row(x, y))
            .collect();
        let mut total = Sums::default();
        rows.iter().for_each(|r| total.add(r));
        // The same rows, summed from two "chunks" in order: the same bits.
        let mut again = Sums::default();
        for chunk in rows.chunks(3) {
            chunk.iter().for_each(|r| again.add(r));
        }
        assert_eq!(total, again);
    }
}
