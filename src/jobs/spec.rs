//! A job's config: the JSON of `stepkto train`'s config file plus `method`, with datasets
//! named by id and the step judge by the name of a served model (or `symbolic`). Checked
//! field by field when the job is posted (a 422 names the field), turned into a
//! [`TrainConfig`] with real paths when a worker starts it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::train::label::JudgeKind;
use crate::train::run::{RunMethod, TrainConfig};

/// Why a job config cannot be used; `field` is the dotted path of the culprit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// The dataset fields of a config and the file each becomes in the job's directory.
pub const DATASET_FIELDS: [(&str, &str); 3] = [
    ("problems", "problems.jsonl"),
    ("dataset", "dataset.jsonl"),
    ("eval_problems", "eval_problems.jsonl"),
];

/// A dataset's format by id (None: no such dataset).
type FormatOf<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// A checked job config.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub method: RunMethod,
    /// The served model that judges steps; None: the symbolic judge.
    pub judge_model: Option<String>,
    /// Dataset ids by config field.
    pub datasets: Vec<(&'static str, String)>,
    /// The config with `method` and `judge.model` taken out (as stored).
    pub config: Value,
    /// Threads the job asked for (`threads`); None: the server's `--train-threads`.
    pub threads: Option<usize>,
}

impl JobSpec {
    /// Check a posted body. `served` lists the models the server has loaded;
    /// `dataset_format` gives a dataset's format by id (None: no such dataset).
    /// `max_threads` is the most threads the server gives a job (`--train-threads`; None
    /// when this process runs no jobs, and the worker that claims it clamps instead).
    pub fn parse(
        body: &Value,
        served: &[String],
        dataset_format: &dyn Fn(&str) -> Option<String>,
        max_threads: Option<usize>,
    ) -> Result<JobSpec, SpecError> {
        JobSpec::parse_with(body, Some(served), Some(dataset_format), max_threads)
    }

    /// A stored (already checked) body, read by the worker that claimed it: datasets and
    /// the judge are looked up when the job starts, by the caller.
    pub fn parse_stored(body: &Value) -> Result<JobSpec, SpecError> {
        JobSpec::parse_with(body, None, None, None)
    }

    fn parse_with(
        body: &Value,
        served: Option<&[String]>,
        dataset_format: Option<&FormatOf<'_>>,
        max_threads: Option<usize>,
    ) -> Result<JobSpec, SpecError> {
        let Some(obj) = body.as_object() else {
            return Err(err("(body)", "a job config is a JSON object"));
        };
        let mut cfg: Map<String, Value> = obj.clone();
        let method: RunMethod = match cfg.remove("method") {
            None => return Err(err("method", "missing: sft, kto or step-kto")),
            Some(m) => serde_json::from_value(m)
                .map_err(|_| err("method", "must be one of sft, kto, step-kto"))?,
        };
        for (field, why) in [
            ("output", "the server chooses the job's directory"),
            (
                "device",
                "the worker leases a device from the server's pool",
            ),
        ] {
            if cfg.contains_key(field) {
                return Err(err(field, format!("not allowed in a job: {why}")));
            }
        }
        let threads = match cfg.remove("threads") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => {
                    if let Some(max) = max_threads
                        && n as usize > max
                    {
                        return Err(err(
                            "threads",
                            format!(
                                "{n} asked; this server gives a job at most {max} (--train-threads)"
                            ),
                        ));
                    }
                    Some(n as usize)
                }
                _ => return Err(err("threads", "a positive integer")),
            },
        };
        let mut datasets = Vec::new();
        for (field, _) in DATASET_FIELDS {
            match cfg.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(id)) => {
                    let Some(lookup) = dataset_format else {
                        datasets.push((field, id.clone()));
                        continue;
                    };
                    let Some(format) = lookup(id) else {
                        return Err(err(field, format!("no dataset with id {id:?}")));
                    };
                    let ok = match field {
                        "problems" | "eval_problems" => format == "problems",
                        _ => format == "kto" || format == "sft",
                    };
                    if !ok {
                        return Err(err(
                            field,
                            format!(
                                "dataset {id} holds {format} rows, which this field cannot take"
                            ),
                        ));
                    }
                    if field == "dataset" && (format == "sft") != (method == RunMethod::Sft) {
                        return Err(err(
                            field,
                            format!(
                                "dataset {id} holds {format} rows; method {method:?} needs {}",
                                if method == RunMethod::Sft {
                                    "sft"
                                } else {
                                    "kto"
                                }
                            ),
                        ));
                    }
                    datasets.push((field, id.clone()));
                }
                Some(_) => {
                    return Err(err(field, "a dataset id (a string from POST /v1/datasets)"));
                }
            }
        }
        let mut judge_model = None;
        if let Some(j) = cfg.get_mut("judge") {
            let Some(j) = j.as_object_mut() else {
                return Err(err(
                    "judge",
                    "an object: {\"model\": \"symbolic\" | a served model id}",
                ));
            };
            if j.contains_key("prm") {
                return Err(err(
                    "judge.prm",
                    "a job names a served model in judge.model, not a directory",
                ));
            }
            let name = match j.remove("model") {
                None => "symbolic".to_string(),
                Some(Value::String(s)) => s,
                Some(_) => return Err(err("judge.model", "a string")),
            };
            let kind: Option<JudgeKind> = match j.get("kind") {
                None => None,
                Some(k) => Some(
                    serde_json::from_value(k.clone())
                        .map_err(|_| err("judge.kind", "one of symbolic, prm, prm+symbolic"))?,
                ),
            };
            if name == "symbolic" {
                if kind.is_some_and(|k| k != JudgeKind::Symbolic) {
                    return Err(err(
                        "judge.kind",
                        "a PRM kind needs judge.model to name a served PRM",
                    ));
                }
                j.insert("kind".into(), Value::String("symbolic".into()));
            } else {
                if let Some(served) = served
                    && !served.contains(&name)
                {
                    return Err(err(
                        "judge.model",
                        if served.is_empty() {
                            format!(
                                "no served model {name:?}; this server serves no PRM (start it with --model NAME=DIR), only \"symbolic\""
                            )
                        } else {
                            format!(
                                "no served model {name:?}; this server has {} (and \"symbolic\")",
                                served.join(", ")
                            )
                        },
                    ));
                }
                if kind.is_none() || kind == Some(JudgeKind::Symbolic) {
                    j.insert("kind".into(), Value::String("prm".into()));
                }
                judge_model = Some(name);
            }
        }
        let config = Value::Object(cfg);
        // the rest is checked by the trainer's own parser, on placeholder paths
        let trial = to_train_config(&config, Path::new("/nonexistent-job"), &datasets)?;
        trial
            .check_method(method)
            .map_err(|e| err("method", e.to_string()))?;
        let model = trial.model.clone();
        if served.is_some() && !model.join("config.json").is_file() {
            return Err(err(
                "model",
                format!(
                    "{} is not a model directory on this server (no config.json)",
                    model.display()
                ),
            ));
        }
        Ok(JobSpec {
            method,
            judge_model,
            datasets,
            config,
            threads,
        })
    }
}

/// The trainer's config for a job whose directory is `dir`: datasets become the files the
/// worker wrote there, the output is `dir/run`.
pub fn to_train_config(
    config: &Value,
    dir: &Path,
    datasets: &[(&'static str, String)],
) -> Result<TrainConfig, SpecError> {
    let mut v = config.clone();
    let o = v.as_object_mut().expect("checked to be an object");
    for (field, file) in DATASET_FIELDS {
        if datasets.iter().any(|(f, _)| *f == field) {
            o.insert(
                field.into(),
                Value::String(dir.join(file).display().to_string()),
            );
        }
    }
    o.insert(
        "output".into(),
        Value::String(dir.join("run").display().to_string()),
    );
    let cfg: TrainConfig = serde_path_to_error::deserialize(&v).map_err(|e| {
        let path = e.path().to_string();
        err(
            if path == "." { "(body)" } else { &path },
            e.into_inner().to_string(),
        )
    })?;
    if !cfg.model.is_absolute() {
        return Err(err("model", "an absolute path on the server"));
    }
    cfg.validate().map_err(|(f, m)| err(&f, m))?;
    Ok(cfg)
}

/// The directory of job `id` under the jobs root.
pub fn job_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}
