//! A compute budget on the candidate search (`select.max_candidates`): which sets a capped
//! round trains first.

/// Round 1 under a budget of `budget` candidate sets: the head alone first, then the sets in
/// [`spread_order`] of their lowest block, leaving a greedy search (`greedy_k` > 1) half the
/// budget for its later rounds. `budget` ≥ 1 (the configuration refuses 0).
pub(super) fn within_budget(
    first: Vec<Vec<usize>>,
    num_blocks: usize,
    budget: usize,
    greedy_k: usize,
) -> Vec<Vec<usize>> {
    let (head, mut sets): (Vec<_>, Vec<_>) = first.into_iter().partition(|b| b.is_empty());
    let rank: Vec<usize> = {
        let mut rank = vec![0; num_blocks];
        for (i, b) in spread_order(num_blocks).into_iter().enumerate() {
            rank[b] = i;
        }
        rank
    };
    sets.sort_by_key(|b| (rank[b[0]], b.len()));
    // A greedy search keeps half for its later rounds, but round 1 has a block set beside the
    // head whenever the budget allows two (nothing grows from the head alone).
    let share = if greedy_k > 1 {
        budget.div_ceil(2).max(budget.min(2))
    } else {
        budget
    };
    let mut round: Vec<Vec<usize>> = head.into_iter().take(1).collect();
    round.extend(sets.into_iter().take(share.saturating_sub(round.len())));
    round
}

/// The blocks `0..n` in coarse-to-fine order: the top block, the bottom one, then the midpoints
/// of ever finer intervals, so that any prefix of the order spreads over the model's depth.
pub fn spread_order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    let mut push = |b: usize, order: &mut Vec<usize>| {
        if !seen[b] {
            seen[b] = true;
            order.push(b);
        }
    };
    if n == 0 {
        return order;
    }
    push(n - 1, &mut order);
    push(0, &mut order);
    let mut intervals = std::collections::VecDeque::from([(0, n - 1)]);
    while let Some((lo, hi)) = intervals.pop_front() {
        if hi - lo < 2 {
            continue;
        }
        let mid = (lo + hi) / 2;
        push(mid, &mut order);
        intervals.push_back((lo, mid));
        intervals.push_back((mid, hi));
    }
    for b in 0..n {
        push(b, &mut order);
    }
    order
}

/// How far block `j` is from the nearest block of `set`.
pub(super) fn distance(set: &[usize], j: usize) -> usize {
    set.iter().map(|&b| b.abs_diff(j)).min().unwrap_or(0)
}
