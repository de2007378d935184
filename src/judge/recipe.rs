//! PRM recipes: how each PRM family wants its input written and where its scores are read.
//! A recipe is data ([`RECIPES`]): the prompt layout, the read rule and the head. The model
//! code never branches on the family; [`Recipe::tokenize`] turns (problem, steps) into token
//! ids plus one read position per step, and the head named here turns the hidden state at
//! each position into P(step correct).
//!
//! Chat layouts are rendered with the checkpoint's own `chat_template` (Jinja, via
//! minijinja), so a checkpoint's system header or date line comes out as its authors wrote
//! it; a built-in template is used only when the checkpoint has none.

use serde::Serialize;
use tokenizers::Tokenizer;

use super::JudgeError;
pub use crate::model::chat::ChatTemplate;

/// Where the text comes from and where the scores are read.
#[derive(Debug)]
pub enum Prompt {
    /// One chat (optional system prompt, the problem as the user turn, the steps as one
    /// assistant turn, each followed by `marker`); read at each `marker` token.
    ChatMarked {
        system: Option<&'static str>,
        marker: &'static str,
    },
    /// One user turn per step (the first is `problem + " " + step`), each answered by an
    /// assistant turn `reply`; read at the token before each reply, which predicts it. The
    /// whole conversation is ONE forward pass: causal attention makes the read for step k
    /// independent of the turns after it.
    ChatTurns { reply: &'static str },
    /// Plain text: the problem, `after_problem`, then each step followed by `after_step`.
    /// Read at the `tag` token inside `after_step`, or at the step's last token if no tag.
    Plain {
        after_problem: &'static str,
        after_step: &'static str,
        tag: Option<&'static str>,
    },
}

/// How the score is computed at a read position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadKind {
    /// softmax over the LM-head logits of the good and bad tokens, P = good. Their ids are
    /// those of each encoded alone: on SentencePiece tokenizers that equals Math-Shepherd's
    /// `encode("+ -")[1:]`, and on byte-level BPE (Llama 3) the joint encoding would give
    /// ` -`, a different token from the `-` these PRMs are trained to predict.
    TokenPair {
        good: &'static str,
        bad: &'static str,
    },
    /// `score.0` Linear(h, h) -> ReLU -> `score.2` Linear(h, 2); P = softmax class 1.
    TwoClass,
    /// `v_head.summary` Linear(h, 1); P = sigmoid.
    Value,
}

#[derive(Debug)]
pub struct Recipe {
    pub name: &'static str,
    pub description: &'static str,
    /// `architectures` entries in config.json that identify this recipe unambiguously.
    pub architectures: &'static [&'static str],
    pub prompt: Prompt,
    pub head: HeadKind,
    /// Let the tokenizer add its own specials (BOS) when encoding the text. Chat layouts
    /// render BOS in the template, as `apply_chat_template(tokenize=True)` does.
    pub add_special_tokens: bool,
    /// Template used when the checkpoint has none.
    pub fallback_template: Option<&'static str>,
}

pub const QWEN_SYSTEM: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

pub static RECIPES: &[Recipe] = &[
    Recipe {
        name: "qwen-prm",
        description: "Qwen2.5-Math-PRM: steps joined by <extra_0> in a chat, 2-class head",
        architectures: &["Qwen2ForProcessRewardModel"],
        prompt: Prompt::ChatMarked {
            system: Some(QWEN_SYSTEM),
            marker: "<extra_0>",
        },
        head: HeadKind::TwoClass,
        add_special_tokens: true,
        fallback_template: Some(CHATML),
    },
    Recipe {
        name: "math-shepherd",
        description: "Math-Shepherd: '{problem} {step} ки\\n...', P(+) over the +/- logits at each ки",
        architectures: &[],
        prompt: Prompt::Plain {
            after_problem: " ",
            after_step: " ки\n",
            tag: Some("ки"),
        },
        head: HeadKind::TokenPair {
            good: "+",
            bad: "-",
        },
        add_special_tokens: true,
        fallback_template: None,
    },
    Recipe {
        name: "rlhflow",
        description: "RLHFlow PRM: one user turn per step, assistant '+'; P(+) over +/-, one pass",
        architectures: &[],
        prompt: Prompt::ChatTurns { reply: "+" },
        head: HeadKind::TokenPair {
            good: "+",
            bad: "-",
        },
        add_special_tokens: false,
        fallback_template: Some(LLAMA3),
    },
    Recipe {
        name: "value-head",
        description: "value head v_head.summary Linear(h, 1) on the base model, sigmoid at each step's last token",
        architectures: &[],
        prompt: Prompt::Plain {
            after_problem: "\n\n",
            after_step: "\n\n",
            tag: None,
        },
        head: HeadKind::Value,
        add_special_tokens: true,
        fallback_template: None,
    },
];

pub fn by_name(name: &str) -> Result<&'static Recipe, JudgeError> {
    RECIPES.iter().find(|r| r.name == name).ok_or_else(|| {
        JudgeError::Load(format!(
            "unknown recipe {name:?}; known: {}",
            names().join(", ")
        ))
    })
}

pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.name).collect()
}

/// The recipe named, or the one `config.json`'s `architectures` identify.
pub fn resolve(
    named: Option<&str>,
    architectures: &[String],
) -> Result<&'static Recipe, JudgeError> {
    if let Some(n) = named {
        return by_name(n);
    }
    RECIPES
        .iter()
        .find(|r| {
            architectures
                .iter()
                .any(|a| r.architectures.contains(&a.as_str()))
        })
        .ok_or_else(|| {
            JudgeError::Load(format!(
                "cannot tell the recipe from architectures {architectures:?}; pass --recipe ({})",
                names().join(", ")
            ))
        })
}

/// Token ids of one item and the position of each step's score.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub ids: Vec<u32>,
    pub reads: Vec<usize>,
}

/// Ids the recipe needs from the tokenizer, looked up once at load.
#[derive(Debug, Clone)]
pub struct RecipeIds {
    /// The marker / tag / reply token that must sit at (or right after) each read position.
    pub anchor: Option<u32>,
    /// (good, bad) for token-pair heads.
    pub pair: Option<(u32, u32)>,
}

fn encode(tok: &Tokenizer, text: &str, special: bool) -> Result<tokenizers::Encoding, JudgeError> {
    tok.encode(text, special)
        .map_err(|e| JudgeError::Input(format!("tokenizer: {e}")))
}

fn non_special(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, JudgeError> {
    let e = encode(tok, text, true)?;
    Ok(e.get_ids()
        .iter()
        .zip(e.get_special_tokens_mask())
        .filter(|(_, m)| **m == 0)
        .map(|(i, _)| *i)
        .collect())
}

/// The id of the token that carries `tag` where the recipe writes it (after a step, as in
/// `"... ки\n"`), found by offsets in an encoded sample. A tokenizer may hold the tag only
/// with its leading space (`" ки"` as one added token, while `"ки"` alone is several byte
/// tokens), so encoding the tag alone would name the wrong token.
fn tag_in_context(tok: &Tokenizer, after_step: &str, tag: &str) -> Result<u32, JudgeError> {
    let at = after_step.find(tag).unwrap_or(0);
    let mut ids = Vec::new();
    // Two different step endings: the tag's token must not depend on what precedes it.
    for lead in ["1 + 1 = 2.", "So x = 3"] {
        let text = format!("{lead}{after_step}");
        let enc = encode(tok, &text, false)?;
        let byte = lead.len() + at;
        let pos = enc
            .get_offsets()
            .iter()
            .position(|&(s, e)| s <= byte && byte < e)
            .ok_or_else(|| JudgeError::Load(format!("no token covers the step tag {tag:?}")))?;
        let (s, e) = enc.get_offsets()[pos];
        if s < lead.len() || e < byte + tag.len() {
            return Err(JudgeError::Load(format!(
                "the step tag {tag:?} is not one token of its own in {text:?} (token {pos} spans bytes {s}..{e})"
            )));
        }
        ids.push(enc.get_ids()[pos]);
    }
    if ids[0] != ids[1] {
        return Err(JudgeError::Load(format!(
            "the step tag {tag:?} tokenizes differently after different steps ({ids:?})"
        )));
    }
    Ok(ids[0])
}

impl Recipe {
    pub fn ids(&self, tok: &Tokenizer) -> Result<RecipeIds, JudgeError> {
        let last = |s: &str| -> Result<u32, JudgeError> {
            non_special(tok, s)?
                .last()
                .copied()
                .ok_or_else(|| JudgeError::Load(format!("tokenizer gives no token for {s:?}")))
        };
        let anchor = match &self.prompt {
            Prompt::ChatMarked { marker, .. } => Some(
                tok.token_to_id(marker)
                    .ok_or_else(|| JudgeError::Load(format!("tokenizer has no {marker} token")))?,
            ),
            Prompt::ChatTurns { reply } => Some(last(reply)?),
            Prompt::Plain {
                after_step, tag, ..
            } => tag
                .map(|t| tag_in_context(tok, after_step, t))
                .transpose()?,
        };
        let pair = match self.head {
            HeadKind::TokenPair { good, bad } => Some((last(good)?, last(bad)?)),
            _ => None,
        };
        Ok(RecipeIds { anchor, pair })
    }

    /// Render, tokenize and locate one read position per step.
    pub fn tokenize(
        &self,
        tok: &Tokenizer,
        chat: Option<&ChatTemplate>,
        ids: &RecipeIds,
        problem: &str,
        steps: &[String],
    ) -> Result<Tokenized, JudgeError> {
        let need_chat = || {
            chat.ok_or_else(|| {
                JudgeError::Load(format!("recipe {} needs a chat template", self.name))
            })
        };
        // Byte offsets in the text of the token each score is read at (or just after, `shift`).
        let (text, anchors, shift) = match &self.prompt {
            Prompt::ChatMarked { system, marker } => {
                let mut body = steps.join(marker);
                body.push_str(marker);
                let mut msgs = Vec::new();
                if let Some(s) = system {
                    msgs.push(("system", *s));
                }
                msgs.push(("user", problem));
                msgs.push(("assistant", body.as_str()));
                let text = need_chat()?.render(&msgs)?;
                let anchors: Vec<usize> = text.match_indices(marker).map(|(i, _)| i).collect();
                if anchors.len() != steps.len() {
                    return Err(JudgeError::Input(format!(
                        "the problem or a step contains the step marker {marker}"
                    )));
                }
                (text, anchors, 0)
            }
            Prompt::ChatTurns { reply } => {
                let chat = need_chat()?;
                let first = steps.first().map(|s| format!("{problem} {s}"));
                let mut msgs: Vec<(&str, &str)> = Vec::with_capacity(2 * steps.len());
                for (k, s) in steps.iter().enumerate() {
                    msgs.push((
                        "user",
                        if k == 0 {
                            first.as_deref().unwrap_or("")
                        } else {
                            s
                        },
                    ));
                    msgs.push(("assistant", reply));
                }
                let text = chat.render(&msgs)?;
                let mut anchors = Vec::with_capacity(steps.len());
                for k in 0..steps.len() {
                    let prefix = chat.render(&msgs[..2 * k + 2])?;
                    let at = prefix.rfind(reply).filter(|_| text.starts_with(&prefix));
                    anchors.push(at.ok_or_else(|| {
                        JudgeError::Input("chat template does not render turn by turn".into())
                    })?);
                }
                (text, anchors, 1)
            }
            Prompt::Plain {
                after_problem,
                after_step,
                tag,
            } => {
                let mut text = format!("{problem}{after_problem}");
                let mut anchors = Vec::with_capacity(steps.len());
                for (i, s) in steps.iter().enumerate() {
                    match tag {
                        Some(t) => {
                            anchors.push(text.len() + s.len() + after_step.find(t).unwrap_or(0))
                        }
                        // the last byte of the step that is not trailing whitespace
                        None if s.trim_end().is_empty() => {
                            return Err(JudgeError::Input(format!(
                                "step {i} is empty; recipe {} reads each step's last token",
                                self.name
                            )));
                        }
                        None => anchors.push(text.len() + s.trim_end().len() - 1),
                    }
                    text.push_str(s);
                    text.push_str(after_step);
                }
                (text, anchors, 0)
            }
        };
        let enc = encode(tok, &text, self.add_special_tokens)?;
        let offsets = enc.get_offsets();
        let tids = enc.get_ids();
        let mut reads = Vec::with_capacity(anchors.len());
        for a in anchors {
            // The last token starting at or before the anchor byte covers it.
            let Some(pos) = offsets
                .iter()
                .rposition(|&(s, e)| s <= a && e > s)
                .filter(|&p| offsets[p].1 > a)
            else {
                return Err(JudgeError::Input("no token at a step boundary".into()));
            };
            if let Some(want) = ids.anchor
                && tids[pos] != want
            {
                return Err(JudgeError::Input(format!(
                    "the step marker does not tokenize as its own token (got id {} at {pos})",
                    tids[pos]
                )));
            }
            if pos < shift {
                return Err(JudgeError::Input("no token before the first reply".into()));
            }
            reads.push(pos - shift);
        }
        Ok(Tokenized {
            ids: tids.to_vec(),
            reads,
        })
    }
}
