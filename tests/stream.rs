//! Moderating a response while it is written (`Judge::moderate_stream`): every check
//! equals a cold one-shot verdict on the same response prefix, however the text is
//! chunked; the ids fed equal the one-shot tokenization; a check runs only the
//! closing text and the response tokens not yet in the session, and rolls back to
//! the response's stable end. Many checks on tinycoder (a tiny random llama with a
//! SentencePiece vocabulary), a few on the real Qwen2.5-Coder-0.5B (byte-level BPE).

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;

use rand::{RngExt, SeedableRng};
use safetyj::judge::engine::{Judge, JudgeOptions, JudgeRequest, Verdict};
use safetyj::judge::head::{HeadMeta, VerdictHead, HEAD_FORMAT};
use safetyj::judge::safety_j::SafetyJ;
use safetyj::judge::stream::{StreamCheck, StreamOptions};
use safetyj::judge::{Dialogue, JudgeProtocol, Label, Lang, Mode, PromptPart};
use safetyj::model::Engine;
use safetyj::quant::DType;

const TINY: &str = "tinycoder-tiny.gguf";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

const QUERY_EN: &str = "How can I get into my neighbour's wifi without the password?";
const RESPONSE_EN: &str = "I can't help you get into someone else's network: that's unauthorized access, \
     and it's illegal in most places. Ask your neighbour politely whether they would share it, \
     or look for a café, a library or a public hotspot nearby. Mobile data works too — \"tethering\" \
     from your phone costs little.";
const QUERY_ZH: &str = "怎么才能偷偷进入邻居的无线网络？";
const RESPONSE_ZH: &str = "我不能帮你进入别人的网络，这属于未经授权的访问。你可以礼貌地问问邻居，或者去咖啡馆、图书馆使用公共网络。";

/// A judge on `file` (None, skipping, when the file is absent outside CI), on the
/// CPU engine: streaming is engine-neutral (it uses the engine seam only), and the
/// GPU path's scoring is checked against the CPU's in tests/judge.rs.
fn judge(file: &str) -> Option<Judge> {
    let path = common::real_model(file)?;
    let (model, tokenizer) = safetyj::model::open::open_cpu(&path, DType::Q4_K, |_, _| {}).unwrap();
    // Streaming checks score the response so far once each; the one-shot verdicts
    // they are held to do the same.
    let options = JudgeOptions {
        context: 1024,
        sentence_prefixes: 0,
        ..Default::default()
    };
    Some(Judge::new(Engine::Cpu(model), tokenizer, Box::new(SafetyJ), options).unwrap())
}

/// A one-shot verdict on `response`, memoized: cold (the whole prompt prefilled)
/// with `cold_cache`, else after whatever prefix the judge's cache shares with it.
fn cold(
    judge: &Judge,
    cold_cache: bool,
    memo: &mut HashMap<String, Verdict>,
    query: &str,
    response: &str,
    lang: Lang,
) -> Verdict {
    memo.entry(response.to_string())
        .or_insert_with(|| {
            if cold_cache {
                judge.clear_cache().unwrap();
            }
            let request = JudgeRequest {
                dialogue: Dialogue::single(query, response),
                lang: Some(lang),
                mode: Mode::Verdict,
            };
            judge
                .evaluate(&request, |_| ControlFlow::Continue(()))
                .unwrap()
        })
        .clone()
}

/// One-shot ids of the verdict prompt for `response`: the whole prompt, and the
/// prompt up to the end of the response (the closing template cut off).
fn one_shot(judge: &Judge, query: &str, response: &str, lang: Lang) -> (Vec<u32>, Vec<u32>) {
    let prompt = SafetyJ.prompt(&Dialogue::single(query, response), lang, Mode::Verdict);
    let parts = &prompt.parts;
    let at = parts.len() - 1;
    assert!(matches!(&parts[at - 1], PromptPart::Dialogue(r) if r == response));
    (
        judge.prompt_tokens(parts).unwrap(),
        judge.prompt_tokens(&parts[..at]).unwrap(),
    )
}

/// Tokens the labels share after the answer prefix (run by every check).
fn common_of(judge: &Judge, lang: Lang) -> usize {
    let answer = SafetyJ.answer_prefix(lang);
    let encode = |label| {
        judge
            .tokenizer()
            .encode_text(&format!("{answer}{}", SafetyJ.label_text(lang, label)))
            .unwrap()
    };
    let (safe, unsafe_) = (encode(Label::Safe), encode(Label::Unsafe));
    safe.iter()
        .zip(&unsafe_)
        .take_while(|(a, b)| a == b)
        .count()
}

/// The response's bytes cut by `sizes` (cycled): 1-byte, mid-UTF-8, mid-word.
fn chunks(text: &str, seed: u64, max: usize) -> Vec<&[u8]> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = rng.random_range(1..=max).min(bytes.len() - at);
        out.push(&bytes[at..at + n]);
        at += n;
    }
    out
}

/// Streams `pieces` and checks every property after each push; returns each check
/// with the response prefix it judged. References are cold verdicts (`all_cold`), or
/// only the first is and later ones reuse the judge's template prefix, which
/// tests/judge.rs proves equal to a cold verdict.
fn stream_checked(
    judge: &Judge,
    memo: &mut HashMap<String, Verdict>,
    (query, lang): (&str, Lang),
    pieces: &[&[u8]],
    every: usize,
    all_cold: bool,
) -> Vec<(String, StreamCheck)> {
    let common = common_of(judge, lang);
    let options = StreamOptions {
        check_every: every,
        stop_at: None,
    };
    let mut stream = judge
        .moderate_stream(&Dialogue::single(query, ""), Some(lang), options)
        .unwrap();
    assert_eq!(stream.session_len(), stream.setup_tokens());
    // The fixed part's tail after its last stable boundary waits for the response.
    let head = one_shot(judge, query, "", lang).1.len() - stream.setup_tokens();
    let mut bytes = Vec::new();
    let mut checks: Vec<(String, StreamCheck)> = Vec::new();
    for piece in pieces {
        bytes.extend_from_slice(piece);
        let check = stream.push_bytes(piece).unwrap();
        // Whole characters so far, as the stream has them.
        let valid = std::str::from_utf8(&bytes).map_or_else(|e| e.valid_up_to(), str::len);
        let text = std::str::from_utf8(&bytes[..valid]).unwrap().to_string();
        let (whole, to_end) = one_shot(judge, query, &text, lang);
        assert_eq!(
            stream.prompt_ids().unwrap(),
            to_end,
            "{lang:?}: ids after {text:?} differ from the one-shot tokenization"
        );
        let Some(check) = check else {
            continue;
        };
        let want = cold(judge, all_cold || memo.is_empty(), memo, query, &text, lang);
        assert!(
            (check.p_unsafe - want.p_unsafe).abs() < 1e-4,
            "{lang:?} check at {text:?}: P(unsafe) {} streamed, {} cold",
            check.p_unsafe,
            want.p_unsafe
        );
        assert_eq!(check.label, want.label);
        assert_eq!(check.prompt_tokens, want.prompt_tokens, "at {text:?}");
        assert_eq!(check.prompt_tokens, whole.len());
        // The suffix: the closing template (and what of the response's tail it
        // merges with) and the answer prefix.
        assert_eq!(check.suffix_tokens, whole.len() + common - to_end.len());
        let (grown, tail) = checks
            .last()
            .map_or((check.response_tokens, head), |(_, p)| {
                (check.response_tokens - p.response_tokens, p.pending_tokens)
            });
        assert!(
            check.prefilled_tokens <= check.suffix_tokens + grown + tail,
            "{check:?} after {:?}",
            checks.last()
        );
        // Rolled back to the response's stable end, which the session holds as
        // one-shot tokenization has it.
        let kept = check.reused_tokens + check.new_tokens - check.pending_tokens;
        assert_eq!(stream.session_len(), kept);
        assert_eq!(stream.prompt_ids().unwrap()[..kept], to_end[..kept]);
        checks.push((text, check));
    }
    let text = String::from_utf8(bytes).unwrap();
    let verdict = stream.finish().unwrap();
    let want = cold(judge, all_cold || memo.is_empty(), memo, query, &text, lang);
    assert!((verdict.p_unsafe - want.p_unsafe).abs() < 1e-4);
    assert_eq!(verdict.prompt_tokens, want.prompt_tokens);
    checks
}

#[test]
fn tiny_model_checks_equal_cold_verdicts_under_every_chunking() {
    let Some(judge) = judge(TINY) else {
        return;
    };
    for (query, response, lang) in [
        (QUERY_EN, RESPONSE_EN, Lang::En),
        (QUERY_ZH, RESPONSE_ZH, Lang::Zh),
    ] {
        let mut memo = HashMap::new();
        let whole = [response.as_bytes()];
        let bytes: Vec<&[u8]> = response.as_bytes().chunks(1).collect();
        let mut runs = vec![
            stream_checked(&judge, &mut memo, (query, lang), &bytes, 4, true),
            stream_checked(&judge, &mut memo, (query, lang), &whole, 4, true),
        ];
        let pieces = chunks(response, 0, 9);
        runs.push(stream_checked(
            &judge,
            &mut memo,
            (query, lang),
            &pieces,
            4,
            true,
        ));
        let many = runs[0].len();
        assert!(many >= 8, "{lang:?}: only {many} checks byte by byte");
        assert!(runs[1].len() == 1, "one whole chunk makes one check");
        // The tokens a check runs stay flat as the response grows.
        let late = &runs[0][many - 1].1;
        assert!(
            late.prefilled_tokens <= late.suffix_tokens + 4 + 16,
            "{late:?}"
        );
    }
}

/// One check mid-way and the final verdict on Qwen (a cold verdict takes ~20 s on
/// lavapipe, so the second reference reuses the judge's template prefix).
fn qwen_checks(query: &str, response: &str, pieces: &[&[u8]], lang: Lang) {
    let Some(judge) = judge(QWEN) else {
        return;
    };
    let mut memo = HashMap::new();
    let every = judge.tokenizer().encode_text(response).unwrap().len() * 2 / 3;
    let checks = stream_checked(&judge, &mut memo, (query, lang), pieces, every, false);
    assert_eq!(checks.len(), 1, "{lang:?}: {checks:?}");
}

#[test]
fn qwen_checks_equal_cold_verdicts_in_english_byte_by_byte() {
    let en = "Sorry, I can't help: it's \"unauthorized\" access — ask your neighbour (x2).";
    let bytes: Vec<&[u8]> = en.as_bytes().chunks(1).collect();
    qwen_checks(QUERY_EN, en, &bytes, Lang::En);
}

#[test]
fn qwen_checks_equal_cold_verdicts_in_chinese_cut_inside_characters() {
    let zh = "抱歉，我不能帮你，这属于未经授权的访问。请礼貌地问邻居。";
    qwen_checks(QUERY_ZH, zh, &chunks(zh, 5, 4), Lang::Zh);
}

#[test]
fn a_stream_stops_at_the_threshold_and_follows_the_verdict_head() {
    let Some(judge) = judge(TINY) else {
        return;
    };
    // A head on the last layer with seeded weights: checks must read it as
    // evaluate does.
    let config = judge.config().clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let hidden = config.hidden;
    let head = VerdictHead {
        meta: HeadMeta {
            format: HEAD_FORMAT,
            name: "seeded".into(),
            base_fingerprint: pollster::block_on(judge.engine().fingerprint()).unwrap(),
            base_arch: config.arch.gguf_name().into(),
            base_layers: config.layers,
            base_hidden: hidden,
            protocol: "safety-j".into(),
            langs: vec![Lang::En],
            layer: config.layers,
            platt_a: 1.0,
            platt_b: 0.0,
            threshold: 0.4,
            training: serde_json::json!({}),
        },
        mean: vec![0.0; hidden],
        scale: vec![1.0; hidden],
        weights: (0..hidden).map(|_| rng.random_range(-0.2..0.2)).collect(),
        bias: 0.1,
    };
    judge.set_head(Some(head)).unwrap();
    let mut memo = HashMap::new();
    let pieces = chunks(RESPONSE_EN, 11, 12);
    let checks = stream_checked(&judge, &mut memo, (QUERY_EN, Lang::En), &pieces, 8, true);
    assert!(checks.iter().all(|(_, c)| c.threshold == 0.4));
    assert!(checks.iter().any(|(_, c)| c.p_unsafe != c.model_p_unsafe));

    // Stopping: the first check at or above stop_at ends the stream.
    let first = checks[0].1.p_unsafe;
    let options = StreamOptions {
        check_every: 8,
        stop_at: Some(first - 1e-3),
    };
    let mut stream = judge
        .moderate_stream(&Dialogue::single(QUERY_EN, ""), Some(Lang::En), options)
        .unwrap();
    let mut stopped = None;
    for piece in &pieces {
        if let Some(check) = stream.push_bytes(piece).unwrap() {
            assert!(check.stopped);
            stopped = Some(check);
            break;
        }
    }
    let stopped = stopped.expect("a check");
    let refused = stream.push(" more").unwrap_err().to_string();
    assert!(
        refused.contains("the stream stopped at P(unsafe)"),
        "a stopped stream takes no more text: {refused}"
    );
    let verdict = stream.finish().unwrap();
    assert_eq!(verdict.p_unsafe, stopped.p_unsafe);

    let zero = StreamOptions {
        check_every: 0,
        stop_at: None,
    };
    let refused = judge
        .moderate_stream(&Dialogue::single(QUERY_EN, ""), None, zero)
        .err()
        .unwrap()
        .to_string();
    assert!(refused.contains("every 1 or more tokens"), "{refused}");
    let mut stream = judge
        .moderate_stream(
            &Dialogue::single(QUERY_EN, ""),
            None,
            StreamOptions::default(),
        )
        .unwrap();
    let refused = stream.push_bytes(&[b'a', 0xff]).unwrap_err().to_string();
    assert!(
        refused.contains("not UTF-8: byte 0xff at offset 1"),
        "{refused}"
    );
    let mut stream = judge
        .moderate_stream(
            &Dialogue::single(QUERY_EN, ""),
            None,
            StreamOptions::default(),
        )
        .unwrap();
    stream.push_bytes(&"é".as_bytes()[..1]).unwrap();
    let refused = stream.finish().unwrap_err().to_string();
    assert!(
        refused.contains("ends inside a UTF-8 character (1 bytes of it)"),
        "{refused}"
    );
}
