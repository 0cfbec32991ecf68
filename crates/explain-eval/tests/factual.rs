//! The factual prompt set: the committed file parses, every subject range is the subject, and
//! on SmolLM2-135M the subject's token positions and the answer's first token come out right;
//! malformed lines are typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use explain_eval::prompts::{
    FactualCategory, FactualPrompt, factual_prompts, factual_top1, parse_factual,
};
use explain_models::{load, smollm2_gguf_path};
use explainability_core::{Error, LanguageModel};

#[test]
fn the_committed_set_has_every_category() {
    let prompts = factual_prompts().unwrap();
    let count = |c| prompts.iter().filter(|p| p.category == c).count();
    // 250 countries with a capital in countryinfo 1.0.1, 118 elements, 50 states.
    assert_eq!(count(FactualCategory::ElementSymbol), 118);
    assert_eq!(count(FactualCategory::StateCapital), 50);
    assert!(
        count(FactualCategory::CountryCapital) > 200,
        "{}",
        count(FactualCategory::CountryCapital)
    );
    let france = prompts.iter().find(|p| p.subject == "France").unwrap();
    assert_eq!(france.prompt, "The capital of France is");
    assert_eq!(france.answer, " Paris");
}

#[test]
fn malformed_lines_are_typed_errors() {
    let good = r#"{"answer": " Paris", "category": "country_capital", "prompt": "The capital of France is", "subject": "France", "subject_end": 21, "subject_start": 15}"#;
    assert_eq!(parse_factual(good).unwrap().len(), 1);
    let shifted = good.replace("\"subject_end\": 21", "\"subject_end\": 20");
    let past = good.replace("\"subject_end\": 21", "\"subject_end\": 99");
    for bad in [shifted.as_str(), past.as_str(), "{\"answer\": 1}", "not json"] {
        let err = parse_factual(&format!("{good}\n{bad}\n")).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}

#[test]
fn smollm2_subject_tokens_and_top1_filter() {
    let model = load(smollm2_gguf_path()).expect("run `cargo xtask setup`");
    let prompts = factual_prompts().unwrap();
    let find = |s: &str| prompts.iter().find(|p| p.subject == s).unwrap();
    let france = find("France").tokenize(&model).unwrap();
    let tokens = model.token_strings(&france.ids).unwrap();
    assert_eq!(tokens[france.subject.clone()].concat(), " France");
    assert_eq!(france.answer_id, model.encode(" Paris", false).unwrap()[0]);
    // A subject of several tokens: every one of them, and nothing of " is".
    let multi = find("United States").tokenize(&model).unwrap();
    let tokens = model.token_strings(&multi.ids).unwrap();
    assert_eq!(tokens[multi.subject.clone()].concat(), " United States");
    assert_eq!(multi.subject.end, multi.ids.len() - 1);
    // The filter keeps France and drops a prompt whose answer was swapped.
    let mut wrong: FactualPrompt = find("France").clone();
    wrong.answer = " Berlin".into();
    let kept = factual_top1(&model, &[find("France").clone(), wrong]).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].prompt.subject, "France");
}
