//! Reward routes in the shapes RL frameworks already send, so that they call stepkto with
//! no glue code: OpenRLHF's remote reward model (`POST /get_reward`), slime's `remote_rm`
//! and any one-sample client (`POST /v1/reward`), and NeMo Gym's verify contract
//! (`POST /verify`). Each runs the outcome checker of `/v1/verify` (same cache, same
//! budgets, same in-flight permits) and maps its verdict to a number with the server's
//! reward mapping (`--reward-correct`, `--reward-wrong`, `--reward-no-answer`,
//! `--reward-budget`). With `"steps": true` they also return per-step scores from the step
//! judge of `/v1/judge` (`"step_model"` names a served PRM; the symbolic judge otherwise),
//! for process-supervised RL.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::verify::{VerifyItem, VerifyResult, verify_items};
use crate::config::RewardMap;
use crate::outcome::Mode;

/// One sample's outcome, in every route's terms.
struct Scored {
    reward: f64,
    correct: bool,
    extracted: Option<String>,
    /// The verdict's tag (`equal_exact`, `not_equal`, `no_answer`, `budget`, ...) or
    /// `item_error`.
    tag: String,
    message: String,
    steps: Option<Value>,
}

fn map(m: &RewardMap, r: Result<VerifyResult, super::verify::ItemError>) -> Scored {
    match r {
        Ok(v) => {
            let reward = match v.reason.tag.as_str() {
                _ if v.equivalent => m.correct,
                "no_answer" => m.no_answer,
                "budget" => m.budget,
                _ => m.wrong,
            };
            Scored {
                reward,
                correct: v.equivalent,
                extracted: v.extracted,
                tag: v.reason.tag,
                message: v.reason.message,
                steps: None,
            }
        }
        // an input over a size limit gets the budget reward: the trainer needs a number
        // for every sample, and the reason says what happened
        Err(e) => Scored {
            reward: m.budget,
            correct: false,
            extracted: None,
            tag: "item_error".into(),
            message: e.error.error,
            steps: None,
        },
    }
}

/// The per-step options every route takes.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct StepOptions {
    /// Also score each step of the response (default false).
    #[serde(default)]
    pub steps: bool,
    /// The served PRM that scores steps (`symbolic` when absent).
    #[serde(default)]
    pub step_model: Option<String>,
    /// A step scoring below this is labelled wrong (default 0.5).
    #[serde(default)]
    pub step_threshold: Option<f64>,
}

/// Check `(problem, response, label)` triples; with `steps`, judge each response's steps.
async fn score(
    st: &Arc<AppState>,
    samples: Vec<(String, String, String)>,
    opt: &StepOptions,
) -> Result<Vec<Scored>, ApiError> {
    if samples.len() > st.limits.max_batch {
        return Err(ApiError::TooLarge(format!(
            "{} samples exceed max_batch {}",
            samples.len(),
            st.limits.max_batch
        )));
    }
    let _permit = st.inflight.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!("{} requests in flight", st.limits.max_inflight))
    })?;
    let items = samples
        .iter()
        .map(|(_, response, label)| {
            Ok(VerifyItem {
                id: None,
                reference: label.clone(),
                candidate: response.clone(),
                mode: Mode::Solution,
                options: None,
            })
        })
        .collect();
    let verdicts = verify_items(st, items, st.limits.options).await?;
    let mut out: Vec<Scored> = verdicts
        .into_iter()
        .map(|r| map(&st.limits.rewards, r))
        .collect();
    if opt.steps && !samples.is_empty() {
        let req = json!({
            "model": opt.step_model,
            "threshold": opt.step_threshold,
            "items": samples.iter().map(|(p, r, _)| json!({"problem": p, "solution": r})).collect::<Vec<_>>(),
        });
        let body = Bytes::from(serde_json::to_vec(&req).expect("JSON"));
        let judged = super::judge::judge(State(st.clone()), Ok(body)).await?.0;
        let judged = serde_json::to_value(judged).map_err(|e| ApiError::Internal(e.to_string()))?;
        for (s, j) in out
            .iter_mut()
            .zip(judged["items"].as_array().into_iter().flatten())
        {
            s.steps = Some(match j.get("steps") {
                Some(steps) => json!({
                    "scores": steps.as_array().into_iter().flatten().map(|x| x["score"].clone()).collect::<Vec<_>>(),
                    "labels": steps.as_array().into_iter().flatten().map(|x| x["label"].clone()).collect::<Vec<_>>(),
                    "first_wrong_step": j["first_wrong_step"],
                }),
                None => json!({"error": j["error"]}),
            });
        }
    }
    Ok(out)
}

fn bad(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::Validation(format!("{field}: {msg}"))
}

// ---------- OpenRLHF ----------

/// OpenRLHF's remote reward request (`--remote_rm_url` / `--reward.remote_url`):
/// `openrlhf/utils/remote_rm_utils.py` posts `{"query", "prompts", "labels"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct GetRewardRequest {
    /// Prompt + response, as the actor's tokenizer decoded them.
    pub query: Vec<String>,
    /// The prompts (stripped from the front of each query when they match it; without
    /// them the text after the last assistant-turn marker is checked).
    #[serde(default)]
    pub prompts: Option<Vec<String>>,
    /// The reference answers (`--label_key`); needed.
    #[serde(default)]
    pub labels: Option<Vec<Value>>,
    #[serde(flatten)]
    pub steps: StepOptions,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GetRewardResponse {
    /// One per query: the mapped reward.
    pub rewards: Vec<f64>,
    /// The same (OpenRLHF's dynamic filtering reads `scores`, 0 to 1 with the default map).
    pub scores: Vec<f64>,
    /// Per-query numbers for OpenRLHF's logs: `correct`, `has_answer`, `budget_exceeded`
    /// (0 or 1). Numbers only: OpenRLHF turns every list here into a tensor.
    #[schema(value_type = Object)]
    pub extra_logs: Map<String, Value>,
    /// Per query: `{extracted, reason, message}` (and `steps` when asked), for people.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
}

fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[utoipa::path(post, path = "/get_reward", tag = "rewards", request_body = GetRewardRequest,
    responses((status = 200, body = GetRewardResponse), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn get_reward(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GetRewardResponse>, ApiError> {
    let req: GetRewardRequest = super::error::parse_json(&body?)?;
    let n = req.query.len();
    let Some(labels) = req.labels else {
        return Err(bad(
            "labels",
            "missing: the reference answers, one per query (OpenRLHF's --label_key)",
        ));
    };
    if labels.len() != n {
        return Err(bad(
            "labels",
            format!("{} labels for {n} queries", labels.len()),
        ));
    }
    if let Some(p) = &req.prompts
        && p.len() != n
    {
        return Err(bad(
            "prompts",
            format!("{} prompts for {n} queries", p.len()),
        ));
    }
    let samples: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            let q = &req.query[i];
            let prompt = req.prompts.as_ref().map(|p| p[i].as_str()).unwrap_or("");
            // the prompt can hold worked examples with their own answers: check the response
            let response = match q.strip_prefix(prompt) {
                Some(r) if !prompt.is_empty() => r,
                _ => last_turn(q),
            };
            (
                prompt.to_string(),
                response.to_string(),
                label_text(&labels[i]),
            )
        })
        .collect();
    let scored = score(&st, samples, &req.steps).await?;
    let flag = |f: &dyn Fn(&Scored) -> bool| -> Value {
        scored.iter().map(|s| json!(f(s) as u8 as f64)).collect()
    };
    let mut logs = Map::new();
    logs.insert("correct".into(), flag(&|s| s.correct));
    logs.insert("has_answer".into(), flag(&|s| s.extracted.is_some()));
    logs.insert(
        "budget_exceeded".into(),
        flag(&|s| s.tag == "budget" || s.tag == "item_error"),
    );
    let rewards: Vec<f64> = scored.iter().map(|s| s.reward).collect();
    Ok(Json(GetRewardResponse {
        scores: rewards.clone(),
        rewards,
        extra_logs: logs,
        details: scored
            .into_iter()
            .map(|s| {
                let mut d =
                    json!({"extracted": s.extracted, "reason": s.tag, "message": s.message});
                if let Some(steps) = s.steps {
                    d["steps"] = steps;
                }
                d
            })
            .collect(),
    }))
}

/// Where the assistant's last turn starts in a decoded chat (ChatML, Llama 3, Mistral,
/// Gemma, DeepSeek, Phi-3 / GLM and gpt-oss templates); the whole text when none of them is
/// there. Without it the checker would read the prompt's turns too (worked examples with
/// their own boxed answers), and it ignores everything after a turn marker.
fn last_turn(q: &str) -> &str {
    const STARTS: [&str; 8] = [
        "<|im_start|>assistant",
        "<|start_header_id|>assistant<|end_header_id|>",
        "[/INST]",
        "<start_of_turn>model",
        // DeepSeek-V3 / R1: fullwidth bars, not ASCII ones
        "<\u{ff5c}Assistant\u{ff5c}>",
        "<|assistant|>",
        "<|start|>assistant",
        // gpt-oss: the answer channel after the analysis one
        "<|channel|>final<|message|>",
    ];
    STARTS
        .iter()
        .filter_map(|m| q.rfind(m).map(|i| i + m.len()))
        .max()
        .map_or(q, |i| &q[i..])
}

/// The text of a chat message's `content`: a string, or the `text` of each part of a
/// content list (`text`, `input_text`, `output_text`; images and the rest carry none).
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A prompt as frameworks send it: a string, or a list of chat messages (slime's
/// `Sample.prompt`, NeMo Gym's `input`), whose last user turn is the problem.
fn prompt_text(field: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(msgs) => Ok(msgs
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .map(content_text)
            .unwrap_or_default()),
        _ => Err(bad(field, "a string or a list of chat messages")),
    }
}

// ---------- one sample: slime's remote_rm and any client ----------

/// One sample, as slime's `remote_rm` posts it: `{"prompt", "response", "label"}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RewardRequest {
    /// The problem: a string, or chat messages (slime's `Sample.prompt` is either); the
    /// last user turn of a list is what the step judge reads.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub prompt: Value,
    pub response: String,
    /// The reference answer.
    #[schema(value_type = Object)]
    pub label: Value,
    #[serde(flatten)]
    pub steps: StepOptions,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RewardResponse {
    pub reward: f64,
    /// The same number (for clients that read `score`).
    pub score: f64,
    pub correct: bool,
    pub extracted: Option<String>,
    pub reason: String,
    pub message: String,
    /// `{scores, labels, first_wrong_step}` when `steps` was asked.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Value>,
}

fn one(s: Scored) -> RewardResponse {
    RewardResponse {
        reward: s.reward,
        score: s.reward,
        correct: s.correct,
        extracted: s.extracted,
        reason: s.tag,
        message: s.message,
        steps: s.steps,
    }
}

#[utoipa::path(post, path = "/v1/reward", tag = "rewards", request_body = RewardRequest,
    responses((status = 200, body = RewardResponse), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn reward(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RewardResponse>, ApiError> {
    let req: RewardRequest = super::error::parse_json(&body?)?;
    let mut scored = score(
        &st,
        vec![(
            prompt_text("prompt", &req.prompt)?,
            req.response,
            label_text(&req.label),
        )],
        &req.steps,
    )
    .await?;
    Ok(Json(one(scored.pop().expect("one sample"))))
}

// ---------- NeMo Gym ----------

/// The text of an OpenAI Responses-style `response` object: every `output_text` of every
/// `message` in `output`, in order (reasoning items are not the answer).
fn responses_text(v: &Value) -> Result<String, ApiError> {
    let output = v
        .get("output")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("response.output", "a list of output items"))?;
    let mut text = String::new();
    for item in output {
        if item.get("type").and_then(Value::as_str) != Some("message") {
            continue;
        }
        for c in item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if c.get("type").and_then(Value::as_str) == Some("output_text")
                && let Some(t) = c.get("text").and_then(Value::as_str)
            {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
        }
    }
    Ok(text)
}

/// `POST /verify` as NeMo Gym's resources servers take it: the request (its
/// `responses_create_params`, the model's `response`, `expected_answer`, and any other
/// field) comes back with `reward` and `extracted_answer` added.
#[utoipa::path(post, path = "/verify", tag = "rewards",
    request_body(content = Object, description = "{responses_create_params?, response: an OpenAI Responses object, expected_answer, steps?, step_model?}"),
    responses((status = 200, description = "the request's fields plus reward, extracted_answer, reason (and step_scores with steps)", body = Object),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn nemo_verify(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let mut v: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(bad("(body)", "a JSON object"));
    };
    let response = obj
        .get("response")
        .ok_or_else(|| bad("response", "missing"))?;
    let text = responses_text(response)?;
    let expected = obj
        .get("expected_answer")
        .map(label_text)
        .ok_or_else(|| bad("expected_answer", "missing"))?;
    let opt: StepOptions = serde_json::from_value(json!({
        "steps": obj.get("steps").cloned().unwrap_or(json!(false)),
        "step_model": obj.get("step_model").cloned(),
        "step_threshold": obj.get("step_threshold").cloned(),
    }))
    .map_err(|e| bad("steps", e))?;
    // the problem for the step judge: the request's input (a string, or its last user turn)
    let problem = match obj
        .get("responses_create_params")
        .and_then(|p| p.get("input"))
    {
        Some(input) => prompt_text("responses_create_params.input", input)?,
        None => String::new(),
    };
    let mut scored = score(&st, vec![(problem, text, expected)], &opt).await?;
    let s = scored.pop().expect("one sample");
    let o = v.as_object_mut().expect("checked above");
    o.insert("reward".into(), json!(s.reward));
    o.insert("extracted_answer".into(), json!(s.extracted));
    o.insert("reason".into(), json!(s.tag));
    if let Some(steps) = s.steps {
        o.insert("step_scores".into(), steps);
    }
    Ok(Json(v))
}

#[cfg(test)]
mod tests {
    use super::last_turn;

    #[test]
    fn the_last_assistant_turn_of_each_template() {
        let cases = [
            (
                "<|im_start|>user\n3+4=\\boxed{7}. 1+1?<|im_end|>\n<|im_start|>assistant\nIt is \\boxed{2}",
                "\nIt is \\boxed{2}",
            ),
            (
                "<|start_header_id|>user<|end_header_id|>\n\\boxed{7}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\\boxed{2}",
                "\n\\boxed{2}",
            ),
            ("[INST] \\boxed{7} [/INST] \\boxed{2}", " \\boxed{2}"),
            (
                "<start_of_turn>user\n\\boxed{7}<end_of_turn>\n<start_of_turn>model\n\\boxed{2}",
                "\n\\boxed{2}",
            ),
            (
                "<\u{ff5c}User\u{ff5c}>\\boxed{7}<\u{ff5c}Assistant\u{ff5c}><think>x</think>\\boxed{2}",
                "<think>x</think>\\boxed{2}",
            ),
            (
                "<|user|>\n\\boxed{7}<|end|>\n<|assistant|>\n\\boxed{2}",
                "\n\\boxed{2}",
            ),
            (
                "<|start|>user<|message|>\\boxed{7}<|end|><|start|>assistant<|channel|>analysis<|message|>maybe \\boxed{3}<|end|><|start|>assistant<|channel|>final<|message|>\\boxed{2}",
                "\\boxed{2}",
            ),
            // several turns: the last one counts
            (
                "<|im_start|>assistant\n\\boxed{7}<|im_end|><|im_start|>user\nagain<|im_end|><|im_start|>assistant\n\\boxed{2}",
                "\n\\boxed{2}",
            ),
            // no template: the whole text
            (
                "Problem: 1+1. Answer: \\boxed{2}",
                "Problem: 1+1. Answer: \\boxed{2}",
            ),
        ];
        for (q, want) in cases {
            assert_eq!(last_turn(q), want, "{q}");
        }
    }
}
