//! SentencePiece vocabularies stored in GGUF metadata (`tokenizer.ggml.model = "llama"`: Gemma,
//! Llama 2, Mistral v0.1, …), rebuilt as a `tokenizers` BPE model whose merges are derived from
//! the per-token scores.
//!
//! SentencePiece's BPE encoder (and llama.cpp's `llm_tokenizer_spm`, which GGUF files are made
//! for) repeatedly merges the adjacent pair whose concatenation is the best-scoring vocabulary
//! entry, leftmost first. A `tokenizers` BPE model does the same when its merge list is ordered
//! by the score of the merged token, so that list is derived here:
//! 1. only normal tokens (type 1) of two or more characters are merge results, and only splits
//!    `t = a + b` whose halves are both normal tokens are merges;
//! 2. the merges are stably sorted by the score of `t`, best first; ties by the score of `a`,
//!    then of `b`, best first (then token id and split position, the generation order).
//!
//! The work is linear in the total length of the vocabulary (one hash lookup per split point)
//! plus the sort: the 262,144 tokens of Gemma 3 give 513,511 merges.

use explainability_core::{Error, Result};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, Tokenizer};

use super::{
    GgufTokenizerMetadata, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_USER_DEFINED,
    TextTokenizer, add_named_special_tokens, set_post_processor, special_token, tokenizer_error,
};
use crate::gguf::GgufFile;

/// SentencePiece's meta symbol for a space (U+2581 LOWER ONE EIGHTH BLOCK).
const SPACE_SYMBOL: char = '\u{2581}';

/// Builds the tokenizer of a `tokenizer.ggml.model = "llama"` file (see the module docs).
pub(super) fn from_gguf(file: &GgufFile) -> Result<TextTokenizer> {
    let meta = GgufTokenizerMetadata::read(file)?;
    let n_tokens = meta.tokens.len();
    let Some(scores) = file.opt_f32_array("tokenizer.ggml.scores")? else {
        return Err(Error::MissingMetadata {
            key: "tokenizer.ggml.scores".to_owned(),
            expected: "an array of numbers, one per token (a SentencePiece vocabulary's merges \
                       are derived from its scores)"
                .to_owned(),
        });
    };
    super::check_parallel_array("tokenizer.ggml.scores", scores.len(), n_tokens)?;

    // 1. The BPE model. Later duplicates of a piece win, as in a Python dict.
    let mut vocab = Vocab::default();
    for (id, token) in (0u32..).zip(&meta.tokens) {
        vocab.insert((*token).to_owned(), id);
    }
    let merges = derive_merges(&meta.tokens, &scores, &meta.token_types);
    let mut bpe = BPE::builder().vocab_and_merges(vocab, merges).fuse_unk(true).byte_fallback(true);
    if let Some(unk) = meta.text_of(meta.special.unk) {
        bpe = bpe.unk_token(unk.to_owned());
    }
    let bpe = bpe.build().map_err(tokenizer_error("building the SentencePiece BPE model"))?;
    let mut inner = Tokenizer::new(bpe);

    // 2. Spaces become U+2581. With `add_space_prefix` (llama.cpp's default for SentencePiece,
    //    set by Llama 2 and Mistral files), text that starts the input also gets one in front,
    //    as transformers' `LlamaTokenizer` does (`Metaspace`, prepend scheme "first"), and the
    //    decoder strips it again. Gemma files say `add_space_prefix = false`.
    let add_space_prefix = file.opt_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE_SYMBOL.to_string(), " ")
            .map_err(tokenizer_error("building the decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        inner.with_pre_tokenizer(Some(Metaspace::new(SPACE_SYMBOL, PrependScheme::First, false)));
        decoders.push(Strip::new(' ', 1, 0).into());
    } else {
        let replace = Replace::new(" ", SPACE_SYMBOL.to_string())
            .map_err(tokenizer_error("building the normalizer"))?;
        inner.with_normalizer(Some(replace));
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));

    // 3. Added tokens: control tokens are special; user-defined tokens (Gemma's runs of spaces,
    //    tabs and newlines, HTML-like tags) are matched literally before the BPE model, as
    //    llama.cpp does. Then the named special tokens not added yet (e.g. Llama 2's `<unk>`,
    //    type 2).
    let control: Vec<AddedToken> =
        meta.tokens_of_type(TOKEN_TYPE_CONTROL).map(special_token).collect();
    inner.add_special_tokens(&control);
    let user_defined: Vec<AddedToken> = meta
        .tokens_of_type(TOKEN_TYPE_USER_DEFINED)
        .map(|t| AddedToken::from(t.to_owned(), false).normalized(false))
        .collect();
    inner.add_tokens(&user_defined);
    add_named_special_tokens(&mut inner, &meta);

    // 4. Post-processor. llama.cpp and transformers add a BOS to SentencePiece input unless the
    //    file says otherwise.
    set_post_processor(file, &mut inner, &meta, true)?;

    TextTokenizer::new(inner, meta.special)
}

/// A candidate merge `a + b → t`, with the scores that order it.
struct Merge<'a> {
    merged: f32,
    left: f32,
    right: f32,
    a: &'a str,
    b: &'a str,
}

/// The merges of a SentencePiece vocabulary, best first (see the module docs). `token_types`
/// is either empty (every token normal, as llama.cpp assumes) or as long as `tokens`.
fn derive_merges(tokens: &[&str], scores: &[f32], token_types: &[i64]) -> Vec<(String, String)> {
    let is_normal = |index: usize| token_types.get(index).is_none_or(|&ty| ty == TOKEN_TYPE_NORMAL);
    // piece → index of its first normal occurrence, and the score of its last one by that
    // index: a Python dict's order and values, as in the reference recipe. `Vocab` is the
    // tokenizers crate's AHashMap: a cheaper hash than std's SipHash for the ~1.5 million
    // lookups below (one per split point).
    let mut first = Vocab::default();
    first.reserve(tokens.len());
    let mut score_by_first = vec![0.0f32; tokens.len()];
    for (index, (token, &score)) in (0u32..).zip(tokens.iter().zip(scores)) {
        if is_normal(index as usize) {
            let id = *first.entry((*token).to_owned()).or_insert(index);
            score_by_first[id as usize] = score;
        }
    }
    let score = |piece: &str| first.get(piece).map(|&id| score_by_first[id as usize]);
    let mut merges = Vec::new();
    for (index, token) in (0u32..).zip(tokens) {
        // Each normal piece once, at its first occurrence.
        if first.get(*token) != Some(&index) {
            continue;
        }
        let merged = score_by_first[index as usize];
        for (split, _) in token.char_indices().skip(1) {
            let (a, b) = token.split_at(split);
            let Some(left) = score(a) else { continue };
            let Some(right) = score(b) else { continue };
            merges.push(Merge { merged, left, right, a, b });
        }
    }
    // A stable sort: exact ties keep the generation order (token, then split position).
    let descending = |x: f32, y: f32| y.total_cmp(&x);
    merges.sort_by(|x, y| {
        descending(x.merged, y.merged)
            .then_with(|| descending(x.left, y.left))
            .then_with(|| descending(x.right, y.right))
    });
    merges.into_iter().map(|m| (m.a.to_owned(), m.b.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_follow_the_score_of_the_merged_token() {
        // "abc" (score -3) splits as a+bc and ab+c; "ab" (-1) and "bc" (-2) are merges too.
        // The control token "<s>" and the byte token "a" (type 6) take part in nothing.
        let tokens = ["<s>", "a", "b", "c", "ab", "bc", "abc", "ca", "a"];
        let scores = [0.0, -10.0, -10.0, -10.0, -1.0, -2.0, -3.0, -0.5, 0.0];
        let types = [3, 1, 1, 1, 1, 1, 1, 1, 6];
        let merges = derive_merges(&tokens, &scores, &types);
        let pairs: Vec<(&str, &str)> =
            merges.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        // The byte token spelled "a" (type 6) does not replace the normal one. The two splits
        // of "abc" tie on its score: "ab"+"c" (left score -1) before "a"+"bc" (left -10).
        assert_eq!(
            pairs,
            [("c", "a"), ("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")],
            "{merges:?}"
        );
    }

    #[test]
    fn without_token_types_every_token_is_normal() {
        let merges = derive_merges(&["x", "y", "xy"], &[0.0, 0.0, -1.0], &[]);
        assert_eq!(merges, [("x".to_owned(), "y".to_owned())]);
    }
}
