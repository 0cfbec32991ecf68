//! BERT encoders: the real all-MiniLM-L6-v2 against values computed with transformers and
//! sentence-transformers' pooling, padding masks, hook points, classification heads, and the
//! typed errors (no LM head, missing classifier, unknown `model_type`, > 512 positions).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use approx::assert_abs_diff_eq;
use explain_models::{
    AnyModel, Bert, BertConfig, BertModel, LoadOptions, load_with, mean_pool, minilm_dir,
};
use explainability_core::{
    Architecture, Error, ForwardOptions, HookFilter, HookKind, HookPoint, Hooks, LanguageModel,
};
use tch::{Device, Kind, Tensor};

const SENTENCES: [&str; 3] = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The stock market fell sharply today.",
];

fn minilm() -> BertModel {
    BertModel::from_hf_dir(&minilm_dir(), LoadOptions::default()).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

#[test]
fn minilm_matches_transformers_and_sentence_transformers() {
    let model = minilm();
    let info = model.info();
    assert_eq!(info.architecture, Architecture::Bert);
    assert!(!info.causal);
    assert_eq!((info.n_layers, info.n_heads, info.d_model, info.max_positions), (6, 12, 384, 512));

    let (ids, mask) = model.batch(&SENTENCES).unwrap();
    // Ids and values below were computed with transformers 5.24 (eager attention) on this
    // folder; embeddings are mean-pooled over real tokens and L2-normalised.
    assert_eq!(
        Vec::<i64>::try_from(ids.get(1)).unwrap(),
        vec![101, 2619, 3248, 2019, 6602, 1012, 102, 0, 0]
    );
    assert_eq!(Vec::<i64>::try_from(mask.get(1)).unwrap(), vec![1, 1, 1, 1, 1, 1, 1, 0, 0]);
    let emb = model.sentence_embeddings(&SENTENCES).unwrap();
    let expected_first4 = [
        [0.021_664_103, -0.004_864_237, -0.009_649_115, -0.063_401_26],
        [0.038_490_1, 0.000_854_789, 0.005_675_726, -0.091_063_77],
        [0.060_455_02, 0.005_445_289, 0.076_565_75, 0.053_829_52],
    ];
    for (row, expected) in expected_first4.iter().enumerate() {
        let got = values(&emb.get(row as i64).narrow(0, 0, 4));
        for (g, e) in got.iter().zip(expected) {
            // f32 through six layers; transformers and libtorch order sums differently.
            assert_abs_diff_eq!(*g, *e, epsilon = 2e-5);
        }
    }
    let sims = values(&emb.matmul(&emb.tr()));
    assert_abs_diff_eq!(sims[1], 0.667_446_0, epsilon = 1e-4);
    assert_abs_diff_eq!(sims[2], -0.054_027_31, epsilon = 1e-4);
    assert_abs_diff_eq!(sims[5], -0.057_884_57, epsilon = 1e-4);
    assert_abs_diff_eq!(sims[0], 1.0, epsilon = 1e-5);

    // Attention of layer 0, head 0, query 0 over the first keys of sentence 0.
    let (_, cache) =
        model.run_with_cache(SENTENCES[0], HookFilter::point(HookPoint::pattern(0))).unwrap();
    let pattern = cache.get(&HookPoint::pattern(0)).unwrap();
    let got = values(&pattern.get(0).get(0).get(0).narrow(0, 0, 5));
    let expected = [0.292_013_6, 0.059_656_5, 0.034_469_09, 0.050_837_79, 0.065_367_86];
    for (g, e) in got.iter().zip(expected) {
        assert_abs_diff_eq!(*g, e, epsilon = 1e-5);
    }
}

#[test]
fn padding_gets_zero_attention_and_leaves_real_tokens_unchanged() {
    let model = minilm();
    let (ids, mask) = model.batch(&SENTENCES[..2]).unwrap();
    let _guard = tch::no_grad_guard();
    let mut hooks = Hooks::new();
    hooks.cache_detached(HookFilter::all());
    let options =
        ForwardOptions { attention_mask: Some(mask.shallow_clone()), ..Default::default() };
    let out = model.forward_ids(&ids, &options, &mut hooks).unwrap();
    let cache = hooks.take_cache();
    for layer in 0..6 {
        let pattern = cache.get(&HookPoint::pattern(layer)).unwrap();
        // Row 1 has two pad positions (7, 8): every query gives them exactly zero.
        let on_pad = pattern.get(1).narrow(-1, 7, 2);
        assert_eq!(on_pad.abs().max().double_value(&[]), 0.0, "layer {layer}");
        let rows = pattern.sum_dim_intlist(-1, false, Kind::Double);
        assert!(rows.allclose(&rows.ones_like(), 1e-5, 1e-6, false));
    }
    // The padded sentence's real positions equal an unpadded run of it.
    let alone = model.ids_tensor(SENTENCES[1]).unwrap();
    let single = model.forward_ids(&alone, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    let padded_real = out.final_hidden.get(1).narrow(0, 0, 7);
    let diff = (padded_real - single.final_hidden.get(0)).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "padding changed real positions by {diff}");
    // Every hook point fired with the expected shapes (post-norms exist in sandwich-norm
    // decoders only).
    for kind in
        HookKind::ALL.into_iter().filter(|k| !matches!(k, HookKind::Ln1Post | HookKind::Ln2Post))
    {
        let point = if kind.is_per_layer() {
            HookPoint::new(kind, 2)
        } else if kind == HookKind::Embed {
            HookPoint::embed()
        } else {
            HookPoint::ln_final()
        };
        assert!(cache.get(&point).is_some(), "{point} missing");
    }
    assert_eq!(cache.get(&HookPoint::new(HookKind::Q, 0)).unwrap().size(), vec![2, 9, 12, 32]);
    assert_eq!(cache.get(&HookPoint::pattern(5)).unwrap().size(), vec![2, 12, 9, 9]);
    assert_eq!(cache.get(&HookPoint::new(HookKind::MlpPost, 5)).unwrap().size(), vec![2, 9, 1536]);
    // Mean pooling ignores pad rows.
    let pooled = mean_pool(&out.final_hidden, Some(&mask)).unwrap();
    let manual = out.final_hidden.get(1).narrow(0, 0, 7).mean_dim(0, false, Kind::Float);
    assert!(pooled.get(1).allclose(&manual, 1e-6, 1e-6, false));
    // A bare encoder has no LM head; its logits are empty.
    assert_eq!(out.logits.size(), vec![2, 9, 0]);
    assert!(matches!(model.unembed(&out.final_hidden), Err(Error::NoHead { .. })));
}

#[test]
fn longer_than_512_positions_is_refused() {
    let model = minilm();
    let ids = Tensor::full([1, 513], 1037, (Kind::Int64, Device::Cpu));
    assert!(matches!(
        model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()),
        Err(Error::SequenceTooLong { len: 513, max: 512 })
    ));
    let text = "word ".repeat(600);
    assert!(matches!(model.batch(&[text.as_str()]), Err(Error::SequenceTooLong { max: 512, .. })));
    let embeddings = Tensor::zeros([1, 513, 384], (Kind::Float, Device::Cpu));
    assert!(matches!(
        model.forward_embeddings(&embeddings, &ForwardOptions::default(), &mut Hooks::new()),
        Err(Error::SequenceTooLong { len: 513, max: 512 })
    ));
}

fn tiny_config(num_labels: Option<usize>) -> BertConfig {
    BertConfig {
        n_layers: 2,
        n_heads: 4,
        d_model: 16,
        d_mlp: 32,
        vocab_size: 30522,
        max_positions: 32,
        type_vocab_size: 2,
        norm_eps: 1e-12,
        num_labels,
        pooler: true,
    }
}

fn write_classifier_folder(dir: &Path, with_head: bool) {
    let config = r#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"],
        "hidden_size": 16, "num_attention_heads": 4, "num_hidden_layers": 2,
        "intermediate_size": 32, "vocab_size": 30522, "max_position_embeddings": 32,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "id2label": {"0": "neg", "1": "pos", "2": "mid"}}"#;
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::copy(minilm_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let ckpt = Bert::random_checkpoint(&tiny_config(Some(3)), 5).unwrap();
    let tensors: Vec<(String, Tensor)> = ckpt
        .into_tensors()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| with_head || !k.starts_with("classifier"))
        .map(|(k, t)| if k.starts_with("classifier") { (k, t) } else { (format!("bert.{k}"), t) })
        .collect();
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors")).unwrap();
}

#[test]
fn classification_checkpoint_gives_class_logits_and_missing_head_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    write_classifier_folder(dir.path(), true);
    let model = load_with(dir.path(), LoadOptions::default()).unwrap();
    assert!(matches!(model, AnyModel::Bert(_)));
    let ids = model.ids_tensor("good movie").unwrap();
    let out = model.forward_ids(&ids, &ForwardOptions::default(), &mut Hooks::new()).unwrap();
    assert_eq!(out.logits.size(), vec![1, 1, 3]);
    // The logits are the classifier on tanh(pooler([CLS])), recomputed here from parameters.
    let params = model.named_parameters();
    let p = |n: &str| params.iter().find(|(k, _)| k == n).unwrap().1.shallow_clone();
    let cls = out.final_hidden.get(0).get(0);
    let pooled = (cls.matmul(&p("pooler.W").tr()) + p("pooler.b")).tanh();
    let logits = pooled.matmul(&p("classifier.W").tr()) + p("classifier.b");
    assert!(out.logits.get(0).get(0).allclose(&logits, 1e-6, 1e-6, false));

    let dir = tempfile::tempdir().unwrap();
    write_classifier_folder(dir.path(), false);
    assert!(matches!(
        load_with(dir.path(), LoadOptions::default()),
        Err(Error::NoHead { head, .. }) if head == "classification"
    ));
}

#[test]
fn unknown_model_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    assert!(matches!(
        load_with(dir.path(), LoadOptions::default()),
        Err(Error::UnsupportedArchitecture { name, supported })
            if name == "mamba" && supported.contains("bert")
    ));
}

#[test]
fn random_encoder_is_reproducible_and_bidirectional() {
    let a = Bert::random(tiny_config(None), 9, Kind::Float, Device::Cpu).unwrap();
    let b = Bert::random(tiny_config(None), 9, Kind::Float, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[101_i64, 7, 8, 9, 102]).unsqueeze(0);
    let run = |m: &Bert, ids: &Tensor| {
        let mut hooks = Hooks::new();
        hooks.cache_detached(HookFilter::point(HookPoint::pattern(0)));
        let out =
            m.forward(&m.embed(ids).unwrap(), &ForwardOptions::default(), &mut hooks).unwrap();
        (out, hooks.take_cache())
    };
    let (oa, ca) = run(&a, &ids);
    let (ob, _) = run(&b, &ids);
    assert!(oa.final_hidden.equal(&ob.final_hidden));
    // Query 0 attends to the last key: the mask is not causal.
    let p = ca.get(&HookPoint::pattern(0)).unwrap();
    assert!(p.get(0).get(0).get(0).get(4).double_value(&[]) > 0.0);
    // Changing the last token changes the first position's state (bidirectional).
    let ids2 = Tensor::from_slice(&[101_i64, 7, 8, 9, 103]).unsqueeze(0);
    let (oc, _) = run(&a, &ids2);
    assert!(!oa.final_hidden.get(0).get(0).allclose(
        &oc.final_hidden.get(0).get(0),
        1e-6,
        1e-6,
        false
    ));
}
