//! Membership inference on real records: the LOSS-threshold attack (Yeom et al. 2018) between
//! training rows (members) and held-out rows (non-members), as AUC and TPR at fixed FPRs.

use serde::Serialize;

/// The false-positive rates the attack's TPR is reported at.
pub const FPRS: [f64; 2] = [1e-2, 1e-3];

/// The attack's true-positive rate at one false-positive rate, with the counts behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TprAtFpr {
    /// The false-positive rate aimed at.
    pub fpr: f64,
    /// Members flagged over members.
    pub tpr: f64,
    /// Members flagged.
    pub true_positives: usize,
    /// Non-members flagged (at most `fpr` times the non-members).
    pub false_positives: usize,
}

/// What the attack achieves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MiaReport {
    /// Training rows attacked.
    pub members: usize,
    /// Held-out rows attacked.
    pub nonmembers: usize,
    /// Probability that a random member has a lower loss than a random non-member (ties
    /// count one half); 0.5 is chance.
    pub auc: f64,
    /// TPR at each of [`FPRS`].
    pub tpr_at_fpr: Vec<TprAtFpr>,
}

/// The LOSS attack: a row is guessed a member when its loss is below a threshold. `members`
/// and `nonmembers` are the rows' losses under the final model. The threshold for each FPR is
/// the largest whose false positives stay within it; rows of equal loss are flagged together.
pub fn loss_attack(members: &[f32], nonmembers: &[f32]) -> MiaReport {
    // (loss, is member), lowest loss (most member-like) first.
    let mut all: Vec<(f32, bool)> = members
        .iter()
        .map(|&l| (l, true))
        .chain(nonmembers.iter().map(|&l| (l, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (n_in, n_out) = (members.len(), nonmembers.len());
    // Walk the groups of equal loss: AUC by counting pairs, and the flagged counts after each.
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut pairs = 0.0f64;
    let mut best = FPRS.map(|fpr| TprAtFpr {
        fpr,
        tpr: 0.0,
        true_positives: 0,
        false_positives: 0,
    });
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        let (mut gin, mut gout) = (0usize, 0usize);
        while j < all.len() && all[j].0.total_cmp(&all[i].0).is_eq() {
            if all[j].1 {
                gin += 1
            } else {
                gout += 1
            }
            j += 1;
        }
        // Members of this group beat the non-members not yet passed, and tie with this group's.
        pairs += gin as f64 * ((n_out - fp - gout) as f64 + 0.5 * gout as f64);
        tp += gin;
        fp += gout;
        for b in &mut best {
            if fp as f64 <= b.fpr * n_out as f64 {
                b.true_positives = tp;
                b.false_positives = fp;
                b.tpr = tp as f64 / n_in.max(1) as f64;
            }
        }
        i = j;
    }
    MiaReport {
        members: n_in,
        nonmembers: n_out,
        auc: if n_in == 0 || n_out == 0 {
            f64::NAN
        } else {
            pairs / (n_in as f64 * n_out as f64)
        },
        tpr_at_fpr: best.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separated_losses_give_auc_one_and_full_tpr() {
        let r = loss_attack(&[0.1, 0.2, 0.3], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r.auc, 1.0);
        assert_eq!((r.members, r.nonmembers), (3, 4));
        assert!(
            r.tpr_at_fpr
                .iter()
                .all(|t| t.tpr == 1.0 && t.false_positives == 0)
        );
    }

    /// AUC equals the pair count done directly, ties counting one half; TPR at FPR never
    /// exceeds its false-positive allowance.
    #[test]
    fn auc_and_tpr_match_direct_counts() {
        let members: Vec<f32> = (0..300).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let nonmembers: Vec<f32> = (0..500)
            .map(|i| ((i * 53) % 97) as f32 / 9.0 + 0.5)
            .collect();
        let r = loss_attack(&members, &nonmembers);
        let mut pairs = 0.0;
        for a in &members {
            for b in &nonmembers {
                pairs += if a < b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        assert!((r.auc - pairs / 150_000.0).abs() < 1e-12, "{}", r.auc);
        for t in &r.tpr_at_fpr {
            assert!(t.false_positives as f64 <= t.fpr * 500.0);
            // The flagged members are exactly those below the flagged non-members' losses.
            let threshold = members
                .iter()
                .chain(&nonmembers)
                .copied()
                .filter(|&l| {
                    members.iter().filter(|&&m| m <= l).count() == t.true_positives
                        && nonmembers.iter().filter(|&&n| n <= l).count() == t.false_positives
                })
                .count();
            assert!(threshold > 0 || t.true_positives == 0, "{t:?}");
        }
        // Same losses for both: chance.
        let same = loss_attack(&[1.0; 10], &[1.0; 10]);
        assert_eq!(same.auc, 0.5);
        assert_eq!(same.tpr_at_fpr[0].true_positives, 0);
    }
}
