//! Decode over a paged KV cache, in f64: paged gather, logical-page key statistics, the page
//! selector's exact choice, and decode attention for each variant.
//!
//! The cache is K and V pools `[pages, page_size, heads_kv, d]`; sequence `b` holds
//! `seq_lens[b]` tokens, token `t` in physical page `tables[b][t / page_size]` at slot
//! `t % page_size`. The `q_len` new tokens of a sequence are its last ones: new token `i` sits
//! at position `p = seq_len - q_len + i`. Token `t` is visible to it iff `t <= p` and:
//!
//! | [`DecodeRule`] | also |
//! |---|---|
//! | `Dense` | always |
//! | `Streaming { sink, recent }` | `t < sink` or `p - t < recent` |
//! | `Selected { pages, covers }` | `t / page_size` is in `pages[b * heads_kv + h]` or `>= covers[b]` |
//! | `Mixed { streaming_heads, .. }` | per kv head, the streaming or the selected rule |
//!
//! The selector ([`select_pages`]): a logical page (16 tokens) of kv head `h` scores, for each
//! query row of the group (query heads `h * g .. h * g + g`, every new token),
//! `sum_d max(q_d * kmax_d, q_d * kmin_d)` over the page's per-channel key max and min; the
//! group takes the max over its rows; a physical page the max over its logical pages holding
//! tokens. The first `sink_pages` pages and the newest page are always kept; of the rest, the
//! best scores up to `budget_pages` pages in all, ties to the lower page index. Returned
//! ascending.

use crate::layout::Element;
use crate::precision::Precision;
use crate::quant::{round_down, round_up};

/// Tokens per logical page.
pub const LOGICAL_PAGE: usize = 16;

/// A paged KV cache on the host.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a, T: Element> {
    /// `[pages, page_size, heads_kv, head_dim]`.
    pub k: &'a [T],
    /// As `k`.
    pub v: &'a [T],
    /// Tokens per page.
    pub page_size: usize,
    /// KV heads.
    pub heads_kv: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Physical page ids of each sequence, in token order.
    pub tables: &'a [Vec<usize>],
    /// Tokens of each sequence.
    pub seq_lens: &'a [usize],
}

impl<T: Element> PagedKv<'_, T> {
    fn offset(&self, b: usize, t: usize, h: usize) -> usize {
        let page = self.tables[b][t / self.page_size];
        ((page * self.page_size + t % self.page_size) * self.heads_kv + h) * self.head_dim
    }

    /// The keys and values of (sequence `b`, kv head `h`) in token order, each
    /// `[seq_len, head_dim]`.
    pub fn gather(&self, b: usize, h: usize) -> (Vec<f64>, Vec<f64>) {
        let d = self.head_dim;
        let mut k = Vec::with_capacity(self.seq_lens[b] * d);
        let mut v = Vec::with_capacity(self.seq_lens[b] * d);
        for t in 0..self.seq_lens[b] {
            let at = self.offset(b, t, h);
            k.extend(self.k[at..at + d].iter().map(|x| x.to_f64()));
            v.extend(self.v[at..at + d].iter().map(|x| x.to_f64()));
        }
        (k, v)
    }

    /// Per-channel key (max, min) of each logical page of (sequence `b`, kv head `h`), over the
    /// tokens the page holds.
    pub fn page_stats(&self, b: usize, h: usize) -> Vec<(Vec<f64>, Vec<f64>)> {
        let d = self.head_dim;
        let (k, _) = self.gather(b, h);
        k.chunks(LOGICAL_PAGE * d)
            .map(|page| {
                let mut hi = vec![f64::NEG_INFINITY; d];
                let mut lo = vec![f64::INFINITY; d];
                for row in page.chunks(d) {
                    for c in 0..d {
                        hi[c] = hi[c].max(row[c]);
                        lo[c] = lo[c].min(row[c]);
                    }
                }
                (hi, lo)
            })
            .collect()
    }
}

/// Which cached tokens a decode variant reads.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeRule {
    /// Every token.
    Dense,
    /// Sink and recent tokens.
    Streaming {
        /// Leading tokens always visible.
        sink: usize,
        /// Tokens within this distance (`p - t < recent`) are visible.
        recent: usize,
    },
    /// Listed pages and every page from `covers[b]` on.
    Selected {
        /// Logical page indices per (sequence, kv head), `[b * heads_kv + h]`.
        pages: Vec<Vec<usize>>,
        /// Pages each sequence had when the selection was made.
        covers: Vec<usize>,
    },
    /// Per kv head: streaming where `streaming_heads[h]`, else selected.
    Mixed {
        /// One flag per kv head.
        streaming_heads: Vec<bool>,
        /// Streaming sink.
        sink: usize,
        /// Streaming window.
        recent: usize,
        /// As `Selected::pages`.
        pages: Vec<Vec<usize>>,
        /// As `Selected::covers`.
        covers: Vec<usize>,
    },
}

impl DecodeRule {
    /// Whether token `t` of sequence `b` is visible to the new token at `pos` of kv head `h`.
    pub fn visible(
        &self,
        b: usize,
        h: usize,
        heads_kv: usize,
        page_size: usize,
        t: usize,
        pos: usize,
    ) -> bool {
        if t > pos {
            return false;
        }
        let selected = |pages: &[Vec<usize>], covers: &[usize]| {
            let page = t / page_size;
            page >= covers[b] || pages[b * heads_kv + h].contains(&page)
        };
        match self {
            DecodeRule::Dense => true,
            DecodeRule::Streaming { sink, recent } => t < *sink || pos - t < *recent,
            DecodeRule::Selected { pages, covers } => selected(pages, covers),
            DecodeRule::Mixed {
                streaming_heads,
                sink,
                recent,
                pages,
                covers,
            } => {
                if streaming_heads[h] {
                    t < *sink || pos - t < *recent
                } else {
                    selected(pages, covers)
                }
            }
        }
    }
}

/// Decode attention's exact result: `o` is `[batch, heads_q, q_len, d]`, `lse`
/// `[batch, heads_q, q_len]` (natural log; `-inf` and `o = 0` for a row that sees nothing).
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOutput {
    /// Outputs.
    pub o: Vec<f64>,
    /// Log-sum-exp of the scaled scores.
    pub lse: Vec<f64>,
    /// Visible (row, token) pairs summed over the batch and query heads.
    pub visible_pairs: u64,
}

/// Decode attention for queries `q` (`[batch, heads_q, q_len, d]`, contiguous). `scale`
/// defaults to `1/sqrt(d)`.
///
/// # Panics
/// If the shapes do not fit together (`heads_q % heads_kv != 0`, a `q_len` beyond a sequence,
/// a short buffer or table).
pub fn decode_attention<T: Element, Q: Element>(
    q: &[Q],
    heads_q: usize,
    q_len: usize,
    kv: &PagedKv<'_, T>,
    rule: &DecodeRule,
    scale: Option<f64>,
) -> DecodeOutput {
    let (d, hkv) = (kv.head_dim, kv.heads_kv);
    assert!(
        heads_q.is_multiple_of(hkv),
        "heads_q must be a multiple of heads_kv"
    );
    let batch = kv.seq_lens.len();
    assert!(q.len() >= batch * heads_q * q_len * d, "q is too short");
    let group = heads_q / hkv;
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut o = vec![0.0; batch * heads_q * q_len * d];
    let mut lse = vec![f64::NEG_INFINITY; batch * heads_q * q_len];
    let mut visible_pairs = 0;
    for b in 0..batch {
        let len = kv.seq_lens[b];
        assert!(q_len <= len, "sequence {b} is shorter than q_len");
        for h in 0..hkv {
            let (k, v) = kv.gather(b, h);
            for hq in h * group..(h + 1) * group {
                for i in 0..q_len {
                    let pos = len - q_len + i;
                    let row = (b * heads_q + hq) * q_len + i;
                    let qr: Vec<f64> = q[row * d..(row + 1) * d]
                        .iter()
                        .map(|x| x.to_f64())
                        .collect();
                    let scores: Vec<(usize, f64)> = (0..len)
                        .filter(|&t| rule.visible(b, h, hkv, kv.page_size, t, pos))
                        .map(|t| {
                            let s: f64 = (0..d).map(|c| qr[c] * k[t * d + c]).sum();
                            (t, s * scale)
                        })
                        .collect();
                    visible_pairs += scores.len() as u64;
                    if scores.is_empty() {
                        continue;
                    }
                    let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                    lse[row] = m + sum.ln();
                    let out = &mut o[row * d..(row + 1) * d];
                    for &(t, s) in &scores {
                        let w = (s - m).exp() / sum;
                        for c in 0..d {
                            out[c] += w * v[t * d + c];
                        }
                    }
                }
            }
        }
    }
    DecodeOutput {
        o,
        lse,
        visible_pairs,
    }
}

/// The selector's page score of every page of (sequence `b`, kv head `h`): the max over the
/// group's query rows and the page's logical pages of the Quest bound. Forced pages are not
/// marked here.
pub fn page_scores<T: Element, Q: Element>(
    q: &[Q],
    heads_q: usize,
    q_len: usize,
    kv: &PagedKv<'_, T>,
    b: usize,
    h: usize,
) -> Vec<f64> {
    page_scores_stored(q, heads_q, q_len, kv, b, h, None)
}

/// [`page_scores`] over statistics as a cache stores them in `stored`: each max rounded up and
/// each min rounded down to that type (a quantized cache's statistics of its dequantized keys,
/// which stay bounds of what attention reads). `None`: the exact statistics.
pub fn page_scores_stored<T: Element, Q: Element>(
    q: &[Q],
    heads_q: usize,
    q_len: usize,
    kv: &PagedKv<'_, T>,
    b: usize,
    h: usize,
    stored: Option<Precision>,
) -> Vec<f64> {
    let d = kv.head_dim;
    let group = heads_q / kv.heads_kv;
    let mut stats = kv.page_stats(b, h);
    if let Some(p) = stored {
        for (hi, lo) in &mut stats {
            hi.iter_mut()
                .for_each(|x| *x = f64::from(round_up(*x as f32, p)));
            lo.iter_mut()
                .for_each(|x| *x = f64::from(round_down(*x as f32, p)));
        }
    }
    let per_page = kv.page_size / LOGICAL_PAGE;
    let pages = kv.seq_lens[b].div_ceil(kv.page_size);
    let rows: Vec<Vec<f64>> = (h * group..(h + 1) * group)
        .flat_map(|hq| (0..q_len).map(move |i| (b * heads_q + hq) * q_len + i))
        .map(|row| {
            q[row * d..(row + 1) * d]
                .iter()
                .map(|x| x.to_f64())
                .collect()
        })
        .collect();
    (0..pages)
        .map(|p| {
            stats
                .iter()
                .skip(p * per_page)
                .take(per_page)
                .flat_map(|(hi, lo)| {
                    rows.iter().map(move |qr| {
                        (0..d)
                            .map(|c| (qr[c] * hi[c]).max(qr[c] * lo[c]))
                            .sum::<f64>()
                    })
                })
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect()
}

/// The pages the selector keeps for every (sequence, kv head), `[b * heads_kv + h]`,
/// ascending: the first `sink_pages` pages and the newest always, then the best scores (ties:
/// lower page index) up to `budget_pages` pages in all; every page when the sequence has at
/// most `budget_pages`.
///
/// # Panics
/// If `budget_pages < sink_pages + 1`.
pub fn select_pages<T: Element, Q: Element>(
    q: &[Q],
    heads_q: usize,
    q_len: usize,
    kv: &PagedKv<'_, T>,
    budget_pages: usize,
    sink_pages: usize,
) -> Vec<Vec<usize>> {
    select_pages_stored(q, heads_q, q_len, kv, budget_pages, sink_pages, None)
}

/// [`select_pages`] over statistics stored in `stored` (see [`page_scores_stored`]).
///
/// # Panics
/// If `budget_pages < sink_pages + 1`.
pub fn select_pages_stored<T: Element, Q: Element>(
    q: &[Q],
    heads_q: usize,
    q_len: usize,
    kv: &PagedKv<'_, T>,
    budget_pages: usize,
    sink_pages: usize,
    stored: Option<Precision>,
) -> Vec<Vec<usize>> {
    assert!(
        budget_pages > sink_pages,
        "the budget must hold the sink and newest pages"
    );
    let mut out = Vec::new();
    for b in 0..kv.seq_lens.len() {
        for h in 0..kv.heads_kv {
            let scores = page_scores_stored(q, heads_q, q_len, kv, b, h, stored);
            let n = scores.len();
            let forced = |p: usize| p < sink_pages || p + 1 == n;
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &c| {
                forced(c)
                    .cmp(&forced(a))
                    .then(scores[c].partial_cmp(&scores[a]).expect("finite scores"))
                    .then(a.cmp(&c))
            });
            let mut kept: Vec<usize> = order.into_iter().take(budget_pages.min(n)).collect();
            kept.sort_unstable();
            out.push(kept);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences sharing page 2, pages out of order.
    fn cache() -> (Vec<f32>, Vec<f32>, Vec<Vec<usize>>, Vec<usize>) {
        let (pages, ps, hkv, d) = (6, 16, 2, 4);
        let k: Vec<f32> = (0..pages * ps * hkv * d)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let v: Vec<f32> = (0..pages * ps * hkv * d)
            .map(|i| ((i * 13) % 7) as f32 - 3.0)
            .collect();
        (k, v, vec![vec![4, 2, 0], vec![2, 5]], vec![40, 17])
    }

    #[test]
    fn gather_follows_the_table() {
        let (k, v, tables, lens) = cache();
        let kv = PagedKv {
            k: &k,
            v: &v,
            page_size: 16,
            heads_kv: 2,
            head_dim: 4,
            tables: &tables,
            seq_lens: &lens,
        };
        let (gk, gv) = kv.gather(0, 1);
        assert_eq!(gk.len(), 40 * 4);
        // Token 17 of sequence 0 is slot 1 of page 2, head 1.
        let at = ((2 * 16 + 1) * 2 + 1) * 4;
        assert_eq!(
            gk[17 * 4..18 * 4],
            k[at..at + 4].iter().map(|&x| x as f64).collect::<Vec<_>>()[..]
        );
        assert_eq!(gv[17 * 4], v[at] as f64);
        let stats = kv.page_stats(1, 0);
        assert_eq!(stats.len(), 2); // 17 tokens: one full logical page and one of one token
        let (gk1, _) = kv.gather(1, 0);
        assert_eq!(stats[1].0, gk1[16 * 4..17 * 4].to_vec());
        assert_eq!(stats[1].1, gk1[16 * 4..17 * 4].to_vec());
    }

    #[test]
    fn dense_decode_is_causal_among_new_tokens_and_streaming_is_a_shape() {
        let (k, v, tables, lens) = cache();
        let kv = PagedKv {
            k: &k,
            v: &v,
            page_size: 16,
            heads_kv: 2,
            head_dim: 4,
            tables: &tables,
            seq_lens: &lens,
        };
        let q: Vec<f32> = (0..2 * 4 * 3 * 4).map(|i| (i % 5) as f32 * 0.25).collect();
        let dense = decode_attention(&q, 4, 3, &kv, &DecodeRule::Dense, None);
        // Rows see 38, 39, 40 then 15, 16, 17 tokens, for 4 query heads each.
        assert_eq!(dense.visible_pairs, 4 * (38 + 39 + 40 + 15 + 16 + 17));
        let a = decode_attention(
            &q,
            4,
            3,
            &kv,
            &DecodeRule::Streaming { sink: 4, recent: 8 },
            None,
        );
        assert_eq!(a.visible_pairs, 4 * (12 * 3 + 12 * 3));
        // A selection of every page is dense.
        let all = DecodeRule::Selected {
            pages: vec![vec![0, 1, 2], vec![0, 1, 2], vec![0, 1], vec![0, 1]],
            covers: vec![3, 2],
        };
        assert_eq!(decode_attention(&q, 4, 3, &kv, &all, None), dense);
        // Pages past `covers` are read without being listed.
        let newer = DecodeRule::Selected {
            pages: vec![vec![0], vec![0], vec![0], vec![0]],
            covers: vec![1, 1],
        };
        assert_eq!(decode_attention(&q, 4, 3, &kv, &newer, None), dense);
        // Softmax rows sum to one: o of constant V is that constant.
        let ones = vec![1.0f32; v.len()];
        let kv1 = PagedKv { v: &ones, ..kv };
        let out = decode_attention(&q, 4, 3, &kv1, &DecodeRule::Dense, None);
        assert!(out.o.iter().all(|&x| (x - 1.0).abs() < 1e-12));
    }

    #[test]
    fn selection_keeps_forced_pages_and_breaks_ties_low() {
        // 5 pages of 16 for one sequence, one kv head, d 2; page p's keys are all (s_p, 0).
        let page_score = [0.0f32, 3.0, 3.0, 1.0, -2.0];
        let mut k = vec![0.0f32; 5 * 16 * 2];
        for (p, &s) in page_score.iter().enumerate() {
            for t in 0..16 {
                k[(p * 16 + t) * 2] = s;
            }
        }
        let tables = vec![vec![0, 1, 2, 3, 4]];
        let lens = vec![70];
        let kv = PagedKv {
            k: &k,
            v: &k,
            page_size: 16,
            heads_kv: 1,
            head_dim: 2,
            tables: &tables,
            seq_lens: &lens,
        };
        let q = [1.0f32, 0.0];
        assert_eq!(
            page_scores(&q, 1, 1, &kv, 0, 0),
            vec![0.0, 3.0, 3.0, 1.0, -2.0]
        );
        // Budget 3 with one sink page: 0 and 4 forced, then the tie 1/2 goes to page 1.
        assert_eq!(select_pages(&q, 1, 1, &kv, 3, 1), vec![vec![0, 1, 4]]);
        assert_eq!(select_pages(&q, 1, 1, &kv, 4, 1), vec![vec![0, 1, 2, 4]]);
        // Within the budget: every page.
        assert_eq!(select_pages(&q, 1, 1, &kv, 5, 1), vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(select_pages(&q, 1, 1, &kv, 9, 2), vec![vec![0, 1, 2, 3, 4]]);
        // A negated query flips the order: page 3 (-1) beats 1 and 2 (-3).
        assert_eq!(
            select_pages(&[-1.0f32, 0.0], 1, 1, &kv, 3, 1),
            vec![vec![0, 3, 4]]
        );
    }

    #[test]
    fn the_group_takes_the_max_over_heads() {
        // Two query heads on one kv head: head 0 likes page 1, head 1 likes page 2 strongly.
        let mut k = vec![0.0f32; 4 * 16 * 2];
        for t in 0..16 {
            k[(16 + t) * 2] = 1.0; // page 1: channel 0
            k[(32 + t) * 2 + 1] = 5.0; // page 2: channel 1
        }
        let tables = vec![vec![0, 1, 2, 3]];
        let lens = vec![64];
        let kv = PagedKv {
            k: &k,
            v: &k,
            page_size: 16,
            heads_kv: 1,
            head_dim: 2,
            tables: &tables,
            seq_lens: &lens,
        };
        let q = [2.0f32, 0.0, 0.0, 1.0];
        assert_eq!(page_scores(&q, 2, 1, &kv, 0, 0), vec![0.0, 2.0, 5.0, 0.0]);
        assert_eq!(select_pages(&q, 2, 1, &kv, 3, 1), vec![vec![0, 2, 3]]);
    }
}
