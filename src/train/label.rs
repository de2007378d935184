//! Labels for sampled solutions, the trainer's rewards: the outcome bit from
//! `outcome::check` against the reference answer, a bit per step from a step judge (the
//! symbolic checks, a PRM, or a PRM overruled by symbolic refutations), and where each step
//! sits in the completion's tokens, so that the step term scores exactly the tokens of the
//! steps the judge saw.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::TrainError;
use crate::judge::JudgeError;
use crate::judge::batcher::Batcher;
use crate::judge::prm::{ModelSpec, Prm};
use crate::judge::{Status, symbolic};
use crate::outcome::{self, Budget, Mode, Options};
use crate::steps::step_ranges;

/// Which judge labels steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JudgeKind {
    /// A step is wrong when one of its claims is refuted and correct when all are verified;
    /// a step with no decidable claim has no label (the step term skips it: no evidence).
    #[serde(rename = "symbolic")]
    Symbolic,
    /// A step is wrong when the PRM scores it below the threshold.
    #[serde(rename = "prm")]
    Prm,
    /// The PRM's label, except that a symbolic refutation makes a step wrong.
    #[serde(rename = "prm+symbolic")]
    PrmSymbolic,
}

/// The `[judge]` section of a training config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    pub kind: JudgeKind,
    /// The PRM's Hugging Face directory (for `prm` and `prm+symbolic`).
    pub prm: Option<PathBuf>,
    /// The PRM's recipe, when config.json does not tell.
    pub recipe: Option<String>,
    /// A PRM score below this labels the step wrong.
    pub threshold: f64,
    /// Items scored in one PRM forward pass.
    pub batch: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            kind: JudgeKind::Symbolic,
            prm: None,
            recipe: None,
            threshold: 0.5,
            batch: 8,
        }
    }
}

/// One step's verdict as the samples file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLabel {
    /// None: the judge has no evidence either way (symbolic `unknown`).
    pub correct: Option<bool>,
    /// The PRM's P(correct), when a PRM judged.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub score: Option<f64>,
    pub symbolic: Status,
    /// The false claim, for a `refuted` step (what the dashboard shows beside the step).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

/// Where a step judge's PRM lives: loaded by the run, or a model the server has loaded,
/// reached through its batcher (so a job shares the serving copy and its device).
enum PrmSource {
    Own(Box<Prm>),
    Served(Arc<Batcher>),
}

/// A loaded step judge.
pub struct StepJudge {
    kind: JudgeKind,
    prm: Option<PrmSource>,
    threshold: f64,
    batch: usize,
    budget: Budget,
}

impl StepJudge {
    pub fn load(cfg: &JudgeConfig, device: &Device) -> Result<StepJudge, TrainError> {
        let prm = match (cfg.kind, &cfg.prm) {
            (JudgeKind::Symbolic, _) => None,
            (_, None) => {
                return Err(TrainError::Input(
                    "judge.kind needs a PRM directory in judge.prm".into(),
                ));
            }
            (_, Some(dir)) => {
                let mut spec = ModelSpec::parse(&dir.display().to_string());
                spec.dir = dir.clone();
                spec.recipe = cfg.recipe.clone();
                Some(PrmSource::Own(Box::new(
                    Prm::load(&spec, device).map_err(|e| TrainError::Judge(e.to_string()))?,
                )))
            }
        };
        if !(0.0..=1.0).contains(&cfg.threshold) {
            return Err(TrainError::Input(
                "judge.threshold must be in [0, 1]".into(),
            ));
        }
        Ok(StepJudge {
            kind: cfg.kind,
            prm,
            threshold: cfg.threshold,
            batch: cfg.batch.max(1),
            budget: Budget::default(),
        })
    }

    /// A judge of `cfg.kind` whose PRM is a served model (`cfg.prm` is not read).
    pub fn served(cfg: &JudgeConfig, prm: Option<Arc<Batcher>>) -> Result<StepJudge, TrainError> {
        if cfg.kind != JudgeKind::Symbolic && prm.is_none() {
            return Err(TrainError::Input(format!(
                "judge.kind {:?} needs a PRM",
                cfg.kind
            )));
        }
        if !(0.0..=1.0).contains(&cfg.threshold) {
            return Err(TrainError::Input(
                "judge.threshold must be in [0, 1]".into(),
            ));
        }
        Ok(StepJudge {
            kind: cfg.kind,
            prm: prm
                .filter(|_| cfg.kind != JudgeKind::Symbolic)
                .map(PrmSource::Served),
            threshold: cfg.threshold,
            batch: cfg.batch.max(1),
            budget: Budget::default(),
        })
    }

    /// Labels for the steps of each `(problem, steps)` item, in order.
    pub fn label(&self, items: &[(&str, Vec<String>)]) -> Result<Vec<Vec<StepLabel>>, TrainError> {
        let checks: Vec<Vec<(Status, Option<String>)>> = items
            .iter()
            .map(|(p, s)| {
                symbolic::check_solution(p, s, &self.budget)
                    .into_iter()
                    .map(|c| {
                        let refuted = c.status == Status::Refuted;
                        (c.status, refuted.then_some(c.detail))
                    })
                    .collect()
            })
            .collect();
        let scores: Vec<Option<Vec<f32>>> = match &self.prm {
            None => vec![None; items.len()],
            Some(PrmSource::Own(prm)) => self.prm_scores(prm, items)?,
            Some(PrmSource::Served(b)) => served_scores(b, items)?,
        };
        Ok(checks
            .into_iter()
            .zip(scores)
            .map(|(sym, sc)| {
                sym.into_iter()
                    .enumerate()
                    .map(|(h, (status, detail))| {
                        let score = sc.as_ref().map(|s| s[h] as f64);
                        let refuted = status == Status::Refuted;
                        let prm = score.unwrap_or(0.0) >= self.threshold;
                        let correct = match self.kind {
                            JudgeKind::Symbolic => match status {
                                Status::Verified => Some(true),
                                Status::Refuted => Some(false),
                                Status::Unknown => None,
                            },
                            JudgeKind::Prm => Some(prm),
                            JudgeKind::PrmSymbolic => Some(!refuted && prm),
                        };
                        StepLabel {
                            correct,
                            score,
                            symbolic: status,
                            detail,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// PRM scores; an item the PRM cannot take (too long for its context) has every step
    /// labelled wrong (score 0): it is never silently dropped from the round.
    fn prm_scores(
        &self,
        prm: &Prm,
        items: &[(&str, Vec<String>)],
    ) -> Result<Vec<Option<Vec<f32>>>, TrainError> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.batch) {
            let toks: Vec<_> = chunk.iter().map(|(p, s)| prm.tokenize(p, s)).collect();
            let ok: Vec<_> = toks.iter().filter_map(|t| t.as_ref().ok()).collect();
            let mut scored = prm
                .score(&ok)
                .map_err(|e| TrainError::Judge(e.to_string()))?
                .into_iter();
            for ((_, steps), t) in chunk.iter().zip(&toks) {
                out.push(Some(match t {
                    Ok(_) => scored.next().expect("a score list per scored item"),
                    Err(e) => {
                        tracing::warn!("PRM cannot score a sample ({e}); its steps count as wrong");
                        vec![0.0; steps.len()]
                    }
                }));
            }
        }
        Ok(out)
    }
}

/// Scores from a served PRM: queued through its batcher beside the verdict requests. An
/// item it cannot take (too long, unscorable) has every step wrong, as with an owned PRM.
/// A full queue is waited out (serving traffic comes first) for up to ten minutes; a
/// stopped model fails the round, which the job retries when it resumes.
fn served_scores(
    b: &Batcher,
    items: &[(&str, Vec<String>)],
) -> Result<Vec<Option<Vec<f32>>>, TrainError> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; items.len()];
    let mut todo: Vec<usize> = (0..items.len()).collect();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut wait = std::time::Duration::from_millis(20);
    while !todo.is_empty() {
        let owned: Vec<(String, Vec<String>)> = todo
            .iter()
            .map(|&i| (items[i].0.to_string(), items[i].1.clone()))
            .collect();
        let replies = crate::judge::score_blocking(b, &owned, 600_000);
        let mut again = Vec::new();
        for (&i, r) in todo.iter().zip(replies) {
            match r {
                Ok(s) => out[i] = Some(s),
                Err(JudgeError::Input(e)) => {
                    tracing::warn!("PRM cannot score a sample ({e}); its steps count as wrong");
                    out[i] = Some(vec![0.0; items[i].1.len()]);
                }
                Err(e @ JudgeError::TooLong { .. }) => {
                    tracing::warn!("PRM cannot score a sample ({e}); its steps count as wrong");
                    out[i] = Some(vec![0.0; items[i].1.len()]);
                }
                Err(JudgeError::Overloaded(_) | JudgeError::Timeout(_))
                    if std::time::Instant::now() < give_up =>
                {
                    again.push(i)
                }
                Err(e) => return Err(TrainError::Judge(e.to_string())),
            }
        }
        if !again.is_empty() {
            std::thread::sleep(wait);
            wait = (wait * 2).min(std::time::Duration::from_secs(1));
        }
        todo = again;
    }
    Ok(out)
}

/// The outcome label: the completion's final answer is equivalent to the reference.
pub fn outcome_label(answer: &str, completion: &str) -> (bool, Option<String>) {
    let v = outcome::check(
        answer,
        completion,
        Mode::Solution,
        &Options::default(),
        &Budget::default(),
    );
    (v.equivalent, v.extracted)
}

/// The completion's text as the tokens spell it (special tokens skipped) and, per token, the
/// byte offset where its text ends: the prefix `tokens[..=k]` decodes to `text[..ends[k]]`.
/// A token that ends inside a multi-byte character ends where the last whole character does.
///
/// Decoding every prefix would be quadratic in the completion's length, and this runs for
/// every sample of a round. Instead each token's text is read off a short window, as a
/// streaming detokenizer does: `decode(window + token)` minus `decode(window)`, where the
/// window starts at the token before the last one that produced text, so that decoders
/// which treat a sequence's first token specially (a leading space stripped) see the same
/// context as in the whole text. The pieces must add up to the full decode; when a decoder
/// is not local enough for that, the prefixes are decoded after all.
pub fn token_ends(tok: &Tokenizer, tokens: &[u32]) -> Result<(String, Vec<usize>), TrainError> {
    let decode = |t: &[u32]| {
        tok.decode(t, true)
            .map_err(|e| TrainError::Input(format!("decode: {e}")))
    };
    let text = decode(tokens)?;
    let ends = match windowed_ends(&decode, tokens, &text)? {
        Some(ends) => ends,
        None => prefix_ends(&decode, tokens, &text)?,
    };
    Ok((text, ends))
}

/// [`token_ends`] from windows; `None` when the pieces do not add up to `text`.
fn windowed_ends(
    decode: &dyn Fn(&[u32]) -> Result<String, TrainError>,
    tokens: &[u32],
    text: &str,
) -> Result<Option<Vec<usize>>, TrainError> {
    let mut ends = Vec::with_capacity(tokens.len());
    let (mut prefix, mut read, mut out) = (0, 0, 0);
    // the window's text, decode(tokens[prefix..read]): it changes only when a token emits
    let mut before = String::new();
    for k in 0..tokens.len() {
        let after = decode(&tokens[prefix..=k])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            match after.strip_prefix(before.as_str()) {
                Some(piece) if text[out..].starts_with(piece) => out += piece.len(),
                _ => return Ok(None),
            }
            (prefix, read) = (read, k + 1);
            before = decode(&tokens[prefix..read])?;
        }
        ends.push(out);
    }
    Ok((out == text.len()).then_some(ends))
}

/// [`token_ends`] by decoding every prefix: quadratic, but right for any decoder.
fn prefix_ends(
    decode: &dyn Fn(&[u32]) -> Result<String, TrainError>,
    tokens: &[u32],
    text: &str,
) -> Result<Vec<usize>, TrainError> {
    let mut ends = Vec::with_capacity(tokens.len());
    let mut last = 0;
    for k in 0..tokens.len() {
        let prefix = decode(&tokens[..=k])?;
        // a token that ends inside a multi-byte character decodes to U+FFFD: it ends where
        // the common prefix with the full text does, at a character boundary
        let mut common = prefix
            .bytes()
            .zip(text.bytes())
            .take_while(|(a, b)| a == b)
            .count()
            .min(prefix.len());
        while !text.is_char_boundary(common) {
            common -= 1;
        }
        last = last.max(common);
        ends.push(last);
    }
    Ok(ends)
}

/// Token spans `(start, len)` of the steps at byte ranges `steps` of a text whose tokens end
/// at `ends` (from [`token_ends`]). A token belongs to the step its bytes overlap; a token
/// that straddles two steps belongs to the first; tokens between steps (the blank line)
/// belong to none. A step no token covers gets an empty span.
pub fn token_spans(ends: &[usize], steps: &[Range<usize>]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(steps.len());
    let mut next = 0; // first token not yet given to a step
    for r in steps {
        let begin = |k: usize| if k == 0 { 0 } else { ends[k - 1] };
        let mut k = next;
        while k < ends.len() && ends[k] <= r.start {
            k += 1;
        }
        let first = k;
        while k < ends.len() && begin(k) < r.end {
            k += 1;
        }
        out.push((first, k - first));
        next = k;
    }
    out
}

/// A completion's steps (texts) and their token spans `(start, len)`.
pub type Steps = (Vec<String>, Vec<(usize, usize)>);

/// Steps of a completion with their token spans.
pub fn completion_steps(tok: &Tokenizer, tokens: &[u32]) -> Result<Steps, TrainError> {
    let (text, ends) = token_ends(tok, tokens)?;
    let ranges = step_ranges(&text);
    let spans = token_spans(&ends, &ranges);
    let steps = ranges
        .into_iter()
        .map(|r| text[r].replace("\r\n", "\n"))
        .collect();
    Ok((steps, spans))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_give_each_token_to_one_step() {
        // tokens: "a=1" "\n\n" "b" "=2." "\n\nc" "=3"
        let text = "a=1\n\nb=2.\n\nc=3";
        let ends = [3, 5, 6, 9, 12, 14];
        let ranges = step_ranges(text);
        assert_eq!(ranges, vec![0..3, 5..9, 11..14]);
        // the token "\n\nc" straddles the gap and step 3: it belongs to step 3 only
        assert_eq!(token_spans(&ends, &ranges), vec![(0, 1), (2, 2), (4, 2)]);
        // a token covering two steps goes to the first; the second gets an empty span
        assert_eq!(token_spans(&[14], &ranges), vec![(0, 1), (1, 0), (1, 0)]);
    }

    /// The windowed decoding gives every token the end that decoding its prefix does, on
    /// each tokenizer family the tests ship (byte-level BPE, SentencePiece-style BPE,
    /// WordPiece-like), with multi-byte characters split across tokens.
    #[test]
    fn windowed_ends_equal_prefix_ends() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/prm");
        let texts = [
            "Step 1: 3 + 4 = 7.\n\nStep 2: so x = 7 \u{2192} \\boxed{7}",
            "  leading spaces, \u{03c0}r\u{00b2} \u{2264} 10 and \u{221a}2 \u{2248} 1.414\n\n\u{1F600} done",
            "\u{4E00}\u{4E8C}\u{4E09} = 1 + 2 + 3\n\n\u{00e9}t\u{00e9}\u{00a0}x",
            "",
        ];
        let mut checked = 0;
        for dir in std::fs::read_dir(&root).unwrap() {
            let file = dir.unwrap().path().join("tokenizer.json");
            let Ok(tok) = Tokenizer::from_file(&file) else {
                continue;
            };
            for text in texts {
                let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
                let (decoded, ends) = token_ends(&tok, &ids).unwrap();
                let decode = |t: &[u32]| {
                    tok.decode(t, true)
                        .map_err(|e| TrainError::Input(e.to_string()))
                };
                let want = prefix_ends(&decode, &ids, &decoded).unwrap();
                assert_eq!(ends, want, "{} on {text:?}", file.display());
                // and the windows, not the fallback, gave them
                let windowed = windowed_ends(&decode, &ids, &decoded).unwrap();
                assert_eq!(
                    windowed.as_ref(),
                    Some(&want),
                    "{} on {text:?}",
                    file.display()
                );
                assert_eq!(ends.last().copied().unwrap_or(0), decoded.len());
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} tokenizer/text pairs found");
    }
}
