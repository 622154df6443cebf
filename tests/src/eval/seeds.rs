//! The generator seeds evaluation uses, split once and for all into tuning and held-out draws.
//!
//! **The scorer must never be tuned on [`HELDOUT_SEEDS`].** Weights, thresholds and features
//! are set and checked on [`TUNING_SEEDS`] (and the 2009 data); the held-out draws are looked
//! at only to report how the finished scorer does on scenarios it was not fitted to
//! (`flux-eval --heldout`). A change made because a held-out figure looked bad turns that seed
//! into a tuning seed: move it to [`TUNING_SEEDS`] and add a fresh held-out one.
//!
//! The held-out seeds were drawn from /dev/urandom and committed before any tuning against
//! them; they are large so that nobody reaches them by trying small numbers.

/// Seeds the scorer was (and may be) tuned on: the default draw of `cargo xtask eval` (2026) and
/// the "other seeds" of `flux-eval --scenarios-only 40 SEED` in docs/evaluation.md.
pub const TUNING_SEEDS: [u64; 6] = [2026, 1, 2, 3, 4, 5];

/// Seeds for held-out evaluation only (see the module documentation).
pub const HELDOUT_SEEDS: [u64; 10] = [
    10_411_451_579_289_393_966,
    13_306_949_910_500_782_271,
    410_012_010_830_047_845,
    18_045_977_969_634_878_022,
    15_192_853_842_025_314_148,
    16_294_145_353_623_187_170,
    4_420_986_647_887_170_463,
    8_634_456_871_212_384_725,
    5_689_480_410_434_464_038,
    17_485_487_880_941_751_910,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heldout_seeds_are_distinct_and_never_tuning_seeds() {
        for (i, s) in HELDOUT_SEEDS.iter().enumerate() {
            assert!(
                !TUNING_SEEDS.contains(s),
                "held-out seed {s} is a tuning seed"
            );
            assert!(
                !HELDOUT_SEEDS[..i].contains(s),
                "held-out seed {s} appears twice"
            );
        }
    }
}
