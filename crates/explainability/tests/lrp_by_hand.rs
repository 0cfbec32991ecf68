//! AttnLRP and CP-LRP on a one-layer Llama-style model (RMSNorm, RoPE, grouped-query
//! attention with 2 query heads on 1 key/value head, SwiGLU, tied head), computed by hand:
//! the forward pass and every propagation rule written out below as loops over `f64`
//! numbers, independent of the model's relevance mode (which uses detach tricks and
//! autograd) — the rules of arXiv:2402.05602 as stated there:
//!
//! - ε-rule (ε = 0) on every linear map and residual sum `z_j = Σ_i x_i w_ij`:
//!   `R_i = Σ_j x_i w_ij / z_j · R_j`;
//! - the norms' scales `1/√(mean x² + ε)` are constants, so a norm passes relevance through
//!   element by element;
//! - uniform rule on the bilinear products q·kᵀ, A·v and SiLU(gate) ⊙ up: each term's share
//!   (ε-rule over the sum) goes half to each factor; CP-LRP instead treats the pattern `A` and
//!   the gate as constants, so the values and `up` get everything;
//! - softmax: `R_s = s ⊙ (R_A − A · Σ R_A)` (the Taylor rule, Prop. 3.2);
//! - identity rule on SiLU;
//! - the explained quantity is the target logit, which is also its own initial relevance.
//!
//! The model computes norm statistics and logits in f32 whatever its kind (as Hugging Face
//! does), so the two computations agree to f32 round-off: 1e-5 relative, token by token
//! (measured ≤ 3e-7).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use explainability::core::{
    ForwardOptions, Hooks, LanguageModel, RelevanceRule, SpecialTokens, Target, TargetOutput,
    TargetToken,
};
use explainability::gradients::RelevancePropagation;
use explainability::models::{Decoder, DecoderModel, Family, HfConfig, TextTokenizer, minilm_dir};
use tch::{Device, Kind};

const D: usize = 4; // d_model
const HEADS: usize = 2;
const D_HEAD: usize = 2;
const FFN: usize = 6;
const EPS: f64 = 1e-6;
const THETA: f64 = 10_000.0;
const TEXT: &str = "the quick brown fox";

fn model() -> DecoderModel {
    let json = serde_json::json!({
        "model_type": "llama", "hidden_size": D, "num_attention_heads": HEADS,
        "num_key_value_heads": 1, "head_dim": D_HEAD, "intermediate_size": FFN,
        "num_hidden_layers": 1, "vocab_size": 30522, "max_position_embeddings": 64,
        "rms_norm_eps": EPS, "rope_theta": THETA, "tie_word_embeddings": true,
    });
    let config = Family::Llama.config_from_hf(&HfConfig::from_json(json).unwrap()).unwrap();
    let decoder = Decoder::random(config, 7, Kind::Double, Device::Cpu).unwrap();
    let tokenizer = TextTokenizer::from_file(minilm_dir().join("tokenizer.json")).unwrap();
    DecoderModel::new(
        decoder,
        tokenizer,
        "one-layer-llama".into(),
        Family::Llama.architecture(),
        SpecialTokens::default(),
    )
}

/// A parameter as a row-major matrix `[rows][cols]` (vectors are one row).
fn param(model: &DecoderModel, name: &str) -> Vec<Vec<f64>> {
    let t = model
        .named_parameters()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
        .1
        .to_kind(Kind::Double);
    let size = t.size();
    let cols = *size.last().unwrap() as usize;
    let flat = Vec::<f64>::try_from(t.flatten(0, -1)).unwrap();
    flat.chunks(cols).map(<[f64]>::to_vec).collect()
}

/// `W x` for `W` in `[out][in]` layout.
fn matvec(w: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    w.iter().map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

/// ε-rule (ε = 0) back through `z = W x`: `R_i = Σ_j x_i W_ji / z_j · R_j`.
fn linear_rule(w: &[Vec<f64>], x: &[f64], r_out: &[f64]) -> Vec<f64> {
    let z = matvec(w, x);
    (0..x.len()).map(|i| (0..w.len()).map(|j| x[i] * w[j][i] / z[j] * r_out[j]).sum()).collect()
}

/// RMSNorm output and its (constant) per-position scale.
fn rms_norm(x: &[f64], w: &[f64]) -> Vec<f64> {
    let scale = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + EPS).sqrt();
    x.iter().zip(w).map(|(v, g)| v * scale * g).collect()
}

/// RoPE at position `p` as a matrix on one head (Llama's rotate-half pairing: `i` with
/// `i + d/2`), so that its relevance rule is the ε-rule of a linear map.
fn rope(p: usize) -> Vec<Vec<f64>> {
    let half = D_HEAD / 2;
    let mut m = vec![vec![0.0; D_HEAD]; D_HEAD];
    for i in 0..half {
        let angle = p as f64 * THETA.powf(-2.0 * i as f64 / D_HEAD as f64);
        let (sin, cos) = angle.sin_cos();
        m[i][i] = cos;
        m[i][i + half] = -sin;
        m[i + half][i + half] = cos;
        m[i + half][i] = sin;
    }
    m
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn add(a: &mut [f64], b: &[f64]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// Per-token relevance of the target logit at the last position, and the logit itself.
fn by_hand(model: &DecoderModel, ids: &[i64], rule: RelevanceRule) -> (Vec<f64>, f64, usize) {
    let attn_lrp = rule == RelevanceRule::AttnLrp;
    let embed = param(model, "embed.W_E");
    let (wq, wk, wv, wo) = (
        param(model, "blocks.0.attn.W_Q"),
        param(model, "blocks.0.attn.W_K"),
        param(model, "blocks.0.attn.W_V"),
        param(model, "blocks.0.attn.W_O"),
    );
    let (wg, wu, wd) = (
        param(model, "blocks.0.mlp.W_gate"),
        param(model, "blocks.0.mlp.W_in"),
        param(model, "blocks.0.mlp.W_out"),
    );
    let (ln1, ln2, lnf) = (
        param(model, "blocks.0.ln1.w").remove(0),
        param(model, "blocks.0.ln2.w").remove(0),
        param(model, "ln_final.w").remove(0),
    );
    let n = ids.len();
    let scale = (D_HEAD as f64).powf(-0.5);

    // ---- forward ----
    let x0: Vec<Vec<f64>> = ids.iter().map(|&id| embed[id as usize].clone()).collect();
    let n1: Vec<Vec<f64>> = x0.iter().map(|x| rms_norm(x, &ln1)).collect();
    let q: Vec<Vec<f64>> = n1.iter().map(|x| matvec(&wq, x)).collect(); // [pos][head*d_head]
    let k: Vec<Vec<f64>> = n1.iter().map(|x| matvec(&wk, x)).collect(); // one kv head
    let v: Vec<Vec<f64>> = n1.iter().map(|x| matvec(&wv, x)).collect();
    let head = |x: &[f64], h: usize| x[h * D_HEAD..(h + 1) * D_HEAD].to_vec();
    // Rotated queries [pos][head][d_head] and keys [pos][d_head].
    let qr: Vec<Vec<Vec<f64>>> =
        (0..n).map(|t| (0..HEADS).map(|h| matvec(&rope(t), &head(&q[t], h))).collect()).collect();
    let kr: Vec<Vec<f64>> = (0..n).map(|t| matvec(&rope(t), &k[t])).collect();
    // Scores and pattern [head][t][j ≤ t].
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let s: Vec<Vec<Vec<f64>>> = (0..HEADS)
        .map(|h| {
            (0..n).map(|t| (0..=t).map(|j| scale * dot(&qr[t][h], &kr[j])).collect()).collect()
        })
        .collect();
    let a: Vec<Vec<Vec<f64>>> = s
        .iter()
        .map(|sh| {
            sh.iter()
                .map(|row| {
                    let max = row.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    e.iter().map(|x| x / sum).collect()
                })
                .collect()
        })
        .collect();
    // Head outputs o[t] = concat_h Σ_j A[h][t][j] v[j].
    let o: Vec<Vec<f64>> = (0..n)
        .map(|t| {
            (0..HEADS)
                .flat_map(|h| {
                    let a = &a;
                    let v = &v;
                    (0..D_HEAD).map(move |c| (0..=t).map(|j| a[h][t][j] * v[j][c]).sum::<f64>())
                })
                .collect()
        })
        .collect();
    let attn: Vec<Vec<f64>> = o.iter().map(|x| matvec(&wo, x)).collect();
    let x1: Vec<Vec<f64>> =
        x0.iter().zip(&attn).map(|(x, y)| x.iter().zip(y).map(|(a, b)| a + b).collect()).collect();
    let n2: Vec<Vec<f64>> = x1.iter().map(|x| rms_norm(x, &ln2)).collect();
    let g: Vec<Vec<f64>> = n2.iter().map(|x| matvec(&wg, x)).collect();
    let u: Vec<Vec<f64>> = n2.iter().map(|x| matvec(&wu, x)).collect();
    let hid: Vec<Vec<f64>> = g
        .iter()
        .zip(&u)
        .map(|(g, u)| g.iter().zip(u).map(|(a, b)| silu(*a) * b).collect())
        .collect();
    let m: Vec<Vec<f64>> = hid.iter().map(|x| matvec(&wd, x)).collect();
    let x2: Vec<Vec<f64>> =
        x1.iter().zip(&m).map(|(x, y)| x.iter().zip(y).map(|(a, b)| a + b).collect()).collect();
    let last = n - 1;
    let n3 = rms_norm(&x2[last], &lnf);
    let logits = matvec(&embed, &n3);
    let target = (0..logits.len()).max_by(|&i, &j| logits[i].total_cmp(&logits[j])).unwrap();
    let logit = logits[target];

    // ---- relevance, from the top ----
    // The logit's relevance is its value; ε-rule through the tied head; the final norm
    // passes it through.
    let r_x2_last: Vec<f64> = (0..D).map(|c| n3[c] * embed[target][c]).collect();
    let mut r_x2 = vec![vec![0.0; D]; n];
    r_x2[last] = r_x2_last;
    // Residual x2 = x1 + m (ε-rule over the two terms), element by element.
    let mut r_x1 = vec![vec![0.0; D]; n];
    let mut r_m = vec![vec![0.0; D]; n];
    for t in 0..n {
        for c in 0..D {
            r_x1[t][c] = x1[t][c] / x2[t][c] * r_x2[t][c];
            r_m[t][c] = m[t][c] / x2[t][c] * r_x2[t][c];
        }
    }
    // MLP: down projection, the gated product, SiLU (identity rule), gate and up, norm.
    for t in 0..n {
        let r_h = linear_rule(&wd, &hid[t], &r_m[t]);
        let (r_g, r_u): (Vec<f64>, Vec<f64>) = if attn_lrp {
            (r_h.iter().map(|r| r / 2.0).collect(), r_h.iter().map(|r| r / 2.0).collect())
        } else {
            (vec![0.0; FFN], r_h.clone())
        };
        let mut r_n2 = linear_rule(&wg, &n2[t], &r_g);
        add(&mut r_n2, &linear_rule(&wu, &n2[t], &r_u));
        add(&mut r_x1[t], &r_n2);
    }
    // Residual x1 = x0 + attn.
    let mut r_x0 = vec![vec![0.0; D]; n];
    let mut r_attn = vec![vec![0.0; D]; n];
    for t in 0..n {
        for c in 0..D {
            r_x0[t][c] = x0[t][c] / x1[t][c] * r_x1[t][c];
            r_attn[t][c] = attn[t][c] / x1[t][c] * r_x1[t][c];
        }
    }
    let r_o: Vec<Vec<f64>> = (0..n).map(|t| linear_rule(&wo, &o[t], &r_attn[t])).collect();
    // A·v per head: each term A_tj v_jc's share of o_tc, half to A and half to v (AttnLRP)
    // or all to v (CP-LRP).
    let v_share = if attn_lrp { 0.5 } else { 1.0 };
    let mut r_v = vec![vec![0.0; D_HEAD]; n]; // the one kv head, summed over query heads
    let mut r_a: Vec<Vec<Vec<f64>>> =
        (0..HEADS).map(|_| (0..n).map(|t| vec![0.0; t + 1]).collect()).collect();
    for h in 0..HEADS {
        for t in 0..n {
            for c in 0..D_HEAD {
                let oc = o[t][h * D_HEAD + c];
                for j in 0..=t {
                    let share = a[h][t][j] * v[j][c] / oc * r_o[t][h * D_HEAD + c];
                    r_v[j][c] += v_share * share;
                    r_a[h][t][j] += (1.0 - v_share) * share;
                }
            }
        }
    }
    let mut r_n1 = vec![vec![0.0; D]; n];
    for (t, r) in r_n1.iter_mut().enumerate() {
        add(r, &linear_rule(&wv, &n1[t], &r_v[t]));
    }
    if attn_lrp {
        // Softmax (Taylor rule), then q·kᵀ: half to the query, half to the key.
        let mut r_qr = vec![vec![vec![0.0; D_HEAD]; HEADS]; n];
        let mut r_kr = vec![vec![0.0; D_HEAD]; n];
        for h in 0..HEADS {
            for t in 0..n {
                let total: f64 = r_a[h][t].iter().sum();
                for j in 0..=t {
                    let r_s = s[h][t][j] * (r_a[h][t][j] - a[h][t][j] * total);
                    for c in 0..D_HEAD {
                        let share = scale * qr[t][h][c] * kr[j][c] / s[h][t][j] * r_s;
                        r_qr[t][h][c] += share / 2.0;
                        r_kr[j][c] += share / 2.0;
                    }
                }
            }
        }
        for t in 0..n {
            // Back through RoPE (a rotation: ε-rule of a linear map), then W_Q and W_K.
            let r_q: Vec<f64> = (0..HEADS)
                .flat_map(|h| linear_rule(&rope(t), &head(&q[t], h), &r_qr[t][h]))
                .collect();
            let r_k = linear_rule(&rope(t), &k[t], &r_kr[t]);
            add(&mut r_n1[t], &linear_rule(&wq, &n1[t], &r_q));
            add(&mut r_n1[t], &linear_rule(&wk, &n1[t], &r_k));
        }
    }
    // The first norm passes relevance through; per token, sum over the embedding.
    for t in 0..n {
        add(&mut r_x0[t], &r_n1[t]);
    }
    (r_x0.iter().map(|r| r.iter().sum()).collect(), logit, target)
}

#[test]
fn one_layer_relevance_matches_the_rules_computed_by_hand() {
    let model = model();
    let ids = model.encode(TEXT, true).unwrap();
    assert!(ids.len() >= 4, "{ids:?}");
    let logits = model
        .forward_ids(
            &model.ids_tensor(TEXT).unwrap(),
            &ForwardOptions::default(),
            &mut Hooks::new(),
        )
        .unwrap()
        .logits;
    for rule in [RelevanceRule::AttnLrp, RelevanceRule::CpLrp] {
        let (expected, logit, target) = by_hand(&model, &ids, rule);
        // The hand forward is the model's forward.
        let ours_logit = logits.double_value(&[0, ids.len() as i64 - 1, target as i64]);
        assert!((ours_logit - logit).abs() < 1e-5 * logit.abs(), "{ours_logit} vs {logit}");
        let target = Target::Token {
            token: TargetToken::Id(target as i64),
            output: TargetOutput::Logit,
            position: None,
        };
        let got = RelevancePropagation { rule }.relevance(&model, &ids, &target).unwrap();
        println!(
            "{rule:?}: by hand {expected:?} (Σ {:.6}, logit {logit:.6}); ours {:?}",
            expected.iter().sum::<f64>(),
            got.per_token
        );
        assert_eq!(got.per_token.len(), expected.len());
        // Token by token, relative to each token's own relevance: the last token carries
        // nearly all of it through its residual, and the others get theirs only through
        // attention, which is what the rules under test decide.
        for (i, (a, b)) in got.per_token.iter().zip(&expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs() + 1e-12,
                "{rule:?}: token {i}: ours {a} vs by hand {b}"
            );
        }
        if rule == RelevanceRule::CpLrp {
            // No biases and no softmax rule: CP-LRP conserves the logit.
            let sum: f64 = expected.iter().sum();
            assert!((sum - logit).abs() < 1e-9 * logit.abs(), "Σ R {sum} vs logit {logit}");
        }
    }
}
