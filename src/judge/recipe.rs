//! PRM recipes: how each PRM family wants its input written and where its scores are read.
//! A recipe is data ([`RECIPES`]): the prompt layout, the read rule and the head. The model
//! code never branches on the family; [`Recipe::tokenize`] turns (problem, steps) into token
//! ids plus one read position per step, and the head named here turns the hidden state at
//! each position into P(step correct).
//!
//! Chat layouts are rendered with the checkpoint's own `chat_template` (Jinja, via
//! minijinja), so a checkpoint's system header or date line comes out as its authors wrote
//! it; a built-in template is used only when the checkpoint has none.

use std::path::Path;

use minijinja::{Environment, context};
use serde::Serialize;
use tokenizers::Tokenizer;

use super::JudgeError;

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

/// A checkpoint's chat template, compiled once.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

fn token_str(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// From `chat_template.jinja` or `tokenizer_config.json`'s `chat_template`, else `fallback`.
    pub fn load(dir: &Path, fallback: Option<&str>) -> Result<Option<ChatTemplate>, JudgeError> {
        let cfg: serde_json::Value =
            match std::fs::read_to_string(dir.join("tokenizer_config.json")) {
                Ok(s) => serde_json::from_str(&s)
                    .map_err(|e| JudgeError::Load(format!("tokenizer_config.json: {e}")))?,
                Err(_) => serde_json::Value::Null,
            };
        let src = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(s) => Some(s),
            Err(_) => match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // a list of named templates: take "default"
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(String::from)),
                _ => None,
            },
        };
        let Some(src) = src.or_else(|| fallback.map(String::from)) else {
            return Ok(None);
        };
        let mut env = Environment::new();
        // Hugging Face renders with these Jinja settings and Python string methods.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| JudgeError::Load(format!("chat template: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        // Llama 3.2+ templates print today's date.
        env.add_function("strftime_now", |fmt: String| -> String {
            strftime_utc(&fmt)
        });
        env.add_template_owned("chat", src)
            .map_err(|e| JudgeError::Load(format!("chat template: {e}")))?;
        Ok(Some(ChatTemplate {
            env,
            bos: token_str(cfg.get("bos_token")),
            eos: token_str(cfg.get("eos_token")),
        }))
    }

    fn render(&self, messages: &[(&str, &str)]) -> Result<String, JudgeError> {
        let msgs: Vec<_> = messages
            .iter()
            .map(|&(role, content)| context! { role => role, content => content })
            .collect();
        let t = self.env.get_template("chat").map_err(tmpl_err)?;
        t.render(context! {
            messages => msgs,
            add_generation_prompt => false,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(tmpl_err)
    }
}

/// `strftime` on the current UTC time, for the directives chat templates use
/// (`%d %b %B %Y %m %y %H %M %S %%`); others are kept as written.
fn strftime_utc(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    format_date(fmt, secs)
}

fn format_date(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    // days since 1970-01-01 -> civil date (Howard Hinnant's algorithm)
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn tmpl_err(e: minijinja::Error) -> JudgeError {
    JudgeError::Input(format!("chat template: {e}"))
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

#[cfg(test)]
mod tests {
    use super::{ChatTemplate, format_date};

    /// Llama 3.2-style templates call strftime_now and raise_exception; both exist.
    #[test]
    fn templates_with_date_and_exception_calls_render() {
        let dir = std::env::temp_dir().join(format!("stepkto-tmpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tmpl = "{{ bos_token }}{% if messages|length == 0 %}{{ raise_exception('empty') }}{% endif %}Today: {{ strftime_now('%d %b %Y') }}\n{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}{% endfor %}";
        let cfg = serde_json::json!({"chat_template": tmpl, "bos_token": {"content": "<s>"}});
        std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let t = ChatTemplate::load(&dir, None).unwrap().unwrap();
        let out = t.render(&[("user", "  hi  ")]).unwrap();
        assert!(out.starts_with("<s>Today: "), "{out}");
        assert!(out.ends_with("<user>hi"), "{out}");
        let err = t.render(&[]).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dates_format_like_python_strftime() {
        // 2024-07-26 13:08:29 UTC (checked with Python's datetime)
        assert_eq!(format_date("%d %b %Y", 1_722_000_000 - 691), "26 Jul 2024");
        assert_eq!(
            format_date("%Y-%m-%d %H:%M:%S %%", 1_721_999_309),
            "2024-07-26 13:08:29 %"
        );
        assert_eq!(format_date("%d %B %y", 951_782_400), "29 February 00");
    }
}
