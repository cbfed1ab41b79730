//! Small numeric helpers of the tracker: optimal assignment (the Hungarian method) and a median.

/// The median of some values, 0 for none.
pub(super) fn median(values: impl Iterator<Item = f32>) -> f32 {
    let mut v: Vec<f32> = values.collect();
    v.sort_by(f32::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Minimum-cost assignment of rows to columns for a `rows` x `cols` cost matrix (row-major), by
/// the Hungarian method with potentials (O(n^2 m)); returns the (row, column) pairs, one per row
/// or column, whichever are fewer. Deterministic for equal costs.
pub(super) fn hungarian(cost: &[f32], rows: usize, cols: usize) -> Vec<(usize, usize)> {
    // The algorithm wants rows <= cols; solve the transpose otherwise.
    if rows > cols {
        let t: Vec<f32> = (0..cols * rows)
            .map(|i| cost[(i % rows) * cols + i / rows])
            .collect();
        return hungarian(&t, cols, rows)
            .into_iter()
            .map(|(c, r)| (r, c))
            .collect();
    }
    let (n, m) = (rows, cols);
    let a = |i: usize, j: usize| cost[(i - 1) * m + (j - 1)] as f64;
    // 1-based, as in the classic formulation: p[j] is the row matched to column j.
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if used[j] {
                    continue;
                }
                let cur = a(i0, j) - u[i0] - v[j];
                if cur < minv[j] {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if minv[j] < delta {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    (1..=m)
        .filter(|&j| p[j] != 0)
        .map(|j| (p[j] - 1, j - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hungarian_finds_the_optimal_assignment_where_greedy_would_not() {
        // Greedy takes (0,0) at 0.1 and is left with (1,1) at 0.9: total 1.0. Optimal: 0.4.
        let cost = [0.1, 0.2, 0.2, 0.9];
        let mut got = hungarian(&cost, 2, 2);
        got.sort();
        assert_eq!(got, vec![(0, 1), (1, 0)]);
        // Rectangular, both ways.
        assert_eq!(hungarian(&[0.5, 0.1, 0.3], 1, 3), vec![(0, 1)]);
        let mut tall = hungarian(&[0.5, 0.1, 0.3], 3, 1);
        tall.sort();
        assert_eq!(tall, vec![(1, 0)]);
    }
}
