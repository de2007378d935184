//! Command-line and environment arguments -> a validated [`Config`]. Raw clap structs stop
//! here; the rest of the program sees only checked values.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::judge::batcher::BatchConfig;
use crate::judge::prm::ModelSpec;
use crate::model::cpu::CpuMatmul;
use crate::outcome::{Budget, Options};

#[derive(Debug, Parser)]
#[command(
    name = "stepkto",
    version,
    about = "Judge mathematical reasoning: outcome checker, verdict cache, HTTP service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (POST /v1/verify, /v1/judge, GET /v1/models, /health, /info, /metrics, /docs).
    Serve(ServeArgs),
    /// Check answers in a JSONL file: one output line per input line, same order.
    Check(CheckArgs),
    /// Judge the steps of solutions in a JSONL file (per-step verdicts, first wrong step).
    Judge(JudgeArgs),
    /// Evaluate a judge (ProcessBench) or compute the flawed-step rate of a labelled file.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Sample completions from a causal LM for problems or raw prompts in a JSONL file.
    Generate(GenerateArgs),
    /// The summed log-probability of each completion given its prompt under a causal LM.
    Logprobs(LogprobsArgs),
    /// Train a causal LM: SFT on a dataset, or KTO / Step-KTO rounds (or one offline pass).
    #[command(subcommand)]
    Train(TrainCommand),
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Supervised fine-tuning on `dataset` rows (cross-entropy on completion tokens).
    Sft(TrainArgs),
    /// Outcome-level KTO, as TRL defines it.
    Kto(TrainArgs),
    /// Step-KTO: KTO plus lambda_step times the step term.
    StepKto(TrainArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run's config: TOML, or JSON when the name ends in .json.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Continue the run in the config's output directory from its last saved state.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct JudgeArgs {
    #[command(flatten)]
    pub models: ModelArgs,
    /// Input JSONL: {"id", "problem", "steps": [...]} or {"id", "problem", "solution"}.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL (stdout when absent).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// A step whose score is below this is labelled wrong.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// The system prompt `stepkto generate` gives problems (the Step-KTO paper's).
pub const DEFAULT_SYSTEM: &str =
    "Please reason step by step, and put your final answer within \\boxed{}.";

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A Hugging Face directory of a Llama, Qwen2 or Mistral causal LM.
    #[arg(long)]
    pub model: PathBuf,
    /// Input JSONL: {"id", "problem"} (rendered with the model's chat template) or
    /// {"id", "prompt"} (raw text).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL (stdout when absent).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Completions per line.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 keeps every token.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text that ends a completion (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// The system message for problems.
    #[arg(long, default_value = DEFAULT_SYSTEM)]
    pub system: String,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Memory a batch may hold, in MiB (its KV cache at full length and the prefill);
    /// batches are cut to fit.
    #[arg(long, default_value_t = crate::train::sample::DEFAULT_MAX_MEMORY_MB)]
    pub max_memory_mb: usize,
}

#[derive(Debug, Args)]
pub struct LogprobsArgs {
    /// A Hugging Face directory of a Llama, Qwen2 or Mistral causal LM.
    #[arg(long)]
    pub model: PathBuf,
    /// Input JSONL: {"id", "prompt", "completion"} (raw text).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL (stdout when absent).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// ProcessBench: accuracy on erroneous and on correct samples, and their F1.
    Processbench(ProcessBenchArgs),
    /// Among solutions whose final answer is correct, the share with a step labelled wrong.
    FlawedSteps(FlawedStepsArgs),
    /// Generate solutions to problems and score them: Pass@1 (greedy), Maj@K, pass@k and,
    /// with --judge, the flawed-step rate.
    Generate(EvalGenerateArgs),
}

#[derive(Debug, Args)]
pub struct EvalGenerateArgs {
    /// A Hugging Face directory of a Llama, Qwen2 or Mistral causal LM.
    #[arg(long)]
    pub model: PathBuf,
    /// Problems JSONL: {"id", "problem", "answer"} (MATH-500's fields work as they are).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Samples per problem for Maj@K and pass@k (0: greedy only).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Label steps for the flawed-step rate: `symbolic`, a PRM directory, or
    /// `prm+symbolic:DIR`.
    #[arg(long)]
    pub judge: Option<String>,
    /// A PRM score below this labels a step wrong.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Per-problem records (greedy solution, verdicts, sample answers) as JSONL.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The system message problems are rendered with.
    #[arg(long, default_value = DEFAULT_SYSTEM)]
    pub system: String,
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Memory a sampling batch may hold, in MiB.
    #[arg(long, default_value_t = crate::train::sample::DEFAULT_MAX_MEMORY_MB)]
    pub max_memory_mb: usize,
    #[command(flatten)]
    pub record: RecordArgs,
}

/// `--record`: store an eval command's result for the dashboard.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Store the metrics, counts and every judged sample as an eval record in the database
    /// (`--database-url`, the server's default `sqlite://stepkto.db` otherwise).
    #[arg(long)]
    pub record: bool,
    /// The model the record is filed under (default: the judge for processbench, the model
    /// directory's name for generate; flawed-steps needs it).
    #[arg(long, requires = "record")]
    pub record_model: Option<String>,
    /// The dataset's name (default: the input file's name without its extension).
    #[arg(long, requires = "record")]
    pub record_dataset: Option<String>,
    /// The training round the model comes from.
    #[arg(long, requires = "record")]
    pub record_round: Option<i64>,
    #[command(flatten)]
    pub db: DbArgs,
}

#[derive(Debug, Args)]
pub struct ProcessBenchArgs {
    /// A ProcessBench split: {"id", "problem", "steps", "label", "final_answer_correct"} per line.
    #[arg(long, short)]
    pub input: PathBuf,
    #[command(flatten)]
    pub models: ModelArgs,
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    #[command(flatten)]
    pub budget: BudgetArgs,
    #[command(flatten)]
    pub record: RecordArgs,
}

#[derive(Debug, Args)]
pub struct FlawedStepsArgs {
    /// JSONL with `final_answer_correct` and a first-wrong-step index (`first_wrong_step`, or
    /// ProcessBench's `label`); -1 means no wrong step.
    #[arg(long, short)]
    pub input: PathBuf,
    /// With `--model`, judge the steps with it instead of reading the labels from the file.
    #[command(flatten)]
    pub models: ModelArgs,
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    #[command(flatten)]
    pub budget: BudgetArgs,
    #[command(flatten)]
    pub record: RecordArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STEPKTO_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    #[command(flatten)]
    pub db: DbArgs,
    /// Most items in one batch request.
    #[arg(long, env = "STEPKTO_MAX_BATCH", default_value_t = 1024)]
    pub max_batch: usize,
    /// Largest request body, in bytes (larger bodies get 413).
    #[arg(long, env = "STEPKTO_BODY_LIMIT", default_value_t = 8 * 1024 * 1024)]
    pub body_limit: usize,
    /// Verify requests computed at once; more get 429.
    #[arg(long, env = "STEPKTO_MAX_INFLIGHT", default_value_t = 256)]
    pub max_inflight: usize,
    /// Wall time for a whole request, in milliseconds (504 after it).
    #[arg(long, env = "STEPKTO_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// A request with one check to compute runs it on the async thread that read it, for
    /// at most this many microseconds, before handing it to the blocking pool (0: always
    /// the pool). Most checks take tens of microseconds, and the hop costs about as much;
    /// the cap bounds how long one input can hold up that thread's other connections.
    #[arg(long, env = "STEPKTO_INLINE_CHECK_US", default_value_t = 1000)]
    pub inline_check_us: u64,
    /// Shares of a request's checks (and symbolic step judgements) computed at once on the
    /// blocking pool (0: two per core). More wait their turn instead of each taking a
    /// thread: 128 concurrent 64-item batches on two cores were 256 threads fighting for
    /// them, at two thirds of the throughput. A share gives its permit back every 5 ms and
    /// queues again, so slow inputs cannot hold the permits for a whole request.
    #[arg(long, env = "STEPKTO_CHECK_WORKERS", default_value_t = 0)]
    pub check_workers: usize,
    /// The reward routes' number for a right final answer.
    #[arg(
        long,
        env = "STEPKTO_REWARD_CORRECT",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub reward_correct: f64,
    /// ... for a wrong final answer.
    #[arg(
        long,
        env = "STEPKTO_REWARD_WRONG",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub reward_wrong: f64,
    /// ... for a response without a final answer.
    #[arg(
        long,
        env = "STEPKTO_REWARD_NO_ANSWER",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub reward_no_answer: f64,
    /// ... when the check ran out of budget or the input was over a size limit.
    #[arg(
        long,
        env = "STEPKTO_REWARD_BUDGET",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub reward_budget: f64,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub budget: BudgetArgs,
    #[command(flatten)]
    pub jobs: JobArgs,
}

/// Training jobs (`/v1/train`, `/v1/datasets`) and API keys.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Where job directories (datasets, checkpoints, samples) go.
    #[arg(long, env = "STEPKTO_JOBS_DIR", default_value = "stepkto-jobs")]
    pub jobs_dir: PathBuf,
    /// Jobs this process runs at once; 0 runs none (it only serves and queues).
    #[arg(long, env = "STEPKTO_MAX_JOBS", default_value_t = 1)]
    pub max_jobs: usize,
    /// Threads a training job uses; the judges on a shared CPU keep the rest.
    #[arg(long, env = "STEPKTO_TRAIN_THREADS", default_value_t = 1)]
    pub train_threads: usize,
    /// Seconds a worker's claim on a job lasts unrenewed; a job of a killed server is
    /// resumed by the next worker after it.
    #[arg(long, env = "STEPKTO_JOB_LEASE_SECS", default_value_t = 30)]
    pub job_lease_secs: i64,
    /// How often an idle worker looks for a queued job, in milliseconds.
    #[arg(long, env = "STEPKTO_JOB_POLL_MS", default_value_t = 1000)]
    pub job_poll_ms: u64,
    /// Keep the models of only the last N finished rounds of a job (0 keeps all).
    #[arg(long, env = "STEPKTO_KEEP_ROUNDS", default_value_t = 0)]
    pub keep_rounds: usize,
    /// Largest dataset upload, in bytes (larger get 413).
    #[arg(long, env = "STEPKTO_MAX_DATASET_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_dataset_bytes: usize,
    /// Most judged samples in one eval record (`POST /v1/evals`; larger get 422). Its bytes
    /// are bounded by --max-dataset-bytes.
    #[arg(long, env = "STEPKTO_MAX_EVAL_SAMPLES", default_value_t = 100_000)]
    pub max_eval_samples: usize,
    /// Open `/v1/train/{id}/events` streams at once (more get 429).
    #[arg(long, env = "STEPKTO_MAX_EVENT_STREAMS", default_value_t = 64)]
    pub max_event_streams: usize,
    /// A file of API keys, one per line (`#` comments); `/v1/train*` and `/v1/datasets*`
    /// then need `Authorization: Bearer KEY`.
    #[arg(long)]
    pub api_keys_file: Option<PathBuf>,
    /// API keys, comma-separated (besides the file's).
    #[arg(long, env = "STEPKTO_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// `/v1/verify` and `/v1/judge` need a key too.
    #[arg(long)]
    pub require_key_for_judging: bool,
}

/// Step judges to load, and how PRMs are scheduled.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// `symbolic` (the default), or a PRM: `[NAME=]DIR`, a local Hugging Face checkpoint
    /// directory (config.json, tokenizer.json, model.safetensors or a sharded index).
    /// `serve` takes it repeatedly.
    #[arg(long = "model", value_name = "[NAME=]DIR")]
    pub models: Vec<String>,
    /// PRM recipe (qwen-prm, math-shepherd, rlhflow, value-head); detected from config.json
    /// when unambiguous. Give one for all models, or one per `--model` in the same order.
    #[arg(long = "recipe", value_name = "RECIPE")]
    pub recipes: Vec<String>,
    /// `auto` (CUDA devices when built with `cuda`, else the CPU), or `cpu`, `cuda:N`, lists.
    #[arg(long, env = "STEPKTO_DEVICE", default_value = "auto")]
    pub device: String,
    /// Tokens per PRM forward pass: the items' lengths summed where items are packed end to
    /// end (CPU), items x longest item where they are padded (CUDA). 2048 measured best on
    /// the CPU benchmark (1024, 4096 and 8192 were slower); raise it on CUDA.
    #[arg(long, env = "STEPKTO_MAX_BATCH_TOKENS", default_value_t = 2048)]
    pub max_batch_tokens: usize,
    /// Items waiting per PRM before requests get 429.
    #[arg(long, env = "STEPKTO_MAX_QUEUE", default_value_t = 1024)]
    pub max_queue: usize,
    /// Most tokens per item (capped by the model's context); longer items get 413.
    #[arg(long, env = "STEPKTO_MAX_CONTEXT")]
    pub max_context: Option<usize>,
    /// How the CPU computes PRM products: `f32`; `bf16x3` on Intel AMX (each f32 split into
    /// two bf16: scores move by about 1e-5, the PRM runs about 1.7x as fast); `auto` =
    /// bf16x3 where the CPU has AMX, else f32.
    #[arg(
        long,
        env = "STEPKTO_CPU_MATMUL",
        default_value = "auto",
        value_name = "auto|f32|bf16x3"
    )]
    pub cpu_matmul: CpuMatmul,
}

impl ModelArgs {
    /// The PRMs to load (`symbolic` entries are not models to load).
    pub fn specs(&self) -> Result<Vec<ModelSpec>, ConfigError> {
        let dirs: Vec<&String> = self.models.iter().filter(|m| *m != "symbolic").collect();
        let recipe_for = |i: usize| -> Result<Option<String>, ConfigError> {
            match self.recipes.len() {
                0 => Ok(None),
                1 => Ok(Some(self.recipes[0].clone())),
                n if n == dirs.len() => Ok(Some(self.recipes[i].clone())),
                n => Err(ConfigError::Value {
                    name: "--recipe",
                    why: format!(
                        "{n} recipes for {} models: give one, or one per --model",
                        dirs.len()
                    ),
                }),
            }
        };
        if self.max_context == Some(0) {
            return Err(ConfigError::Value {
                name: "--max-context",
                why: "must be positive".into(),
            });
        }
        dirs.iter()
            .enumerate()
            .map(|(i, m)| {
                let mut spec = ModelSpec::parse(m);
                spec.recipe = recipe_for(i)?;
                spec.max_context = self.max_context;
                spec.cpu_matmul = self.cpu_matmul;
                Ok(spec)
            })
            .collect()
    }

    /// At most one judge (the CLI): `None` is the symbolic judge.
    pub fn single(&self) -> Result<Option<ModelSpec>, ConfigError> {
        let mut specs = self.specs()?;
        if specs.len() > 1 {
            return Err(ConfigError::Value {
                name: "--model",
                why: "this command takes one model".into(),
            });
        }
        Ok(specs.pop())
    }

    pub fn batch(&self) -> Result<BatchConfig, ConfigError> {
        if self.max_batch_tokens == 0 || self.max_queue == 0 {
            return Err(ConfigError::Value {
                name: "--max-batch-tokens/--max-queue",
                why: "must be positive".into(),
            });
        }
        Ok(BatchConfig {
            max_batch_tokens: self.max_batch_tokens,
            max_queue: self.max_queue,
        })
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Input JSONL: {"id", "reference", "candidate", "mode"?} per line.
    #[arg(long, short)]
    pub input: PathBuf,
    /// Output JSONL (stdout when absent).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use the verdict cache (the database is not touched otherwise).
    #[arg(long)]
    pub cache: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database: `sqlite://PATH` (default `sqlite://stepkto.db`) or `postgres://...`.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Budget of each check (see `outcome::budget`).
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Longest whole solution, in bytes.
    #[arg(long, env = "STEPKTO_MAX_SOLUTION_LEN")]
    pub max_solution_len: Option<usize>,
    /// Longest extracted answer, in bytes.
    #[arg(long, env = "STEPKTO_MAX_ANSWER_LEN")]
    pub max_answer_len: Option<usize>,
    /// Deepest nesting followed by the parser.
    #[arg(long, env = "STEPKTO_MAX_DEPTH")]
    pub max_depth: Option<usize>,
    /// Largest exponent evaluated exactly.
    #[arg(long, env = "STEPKTO_MAX_EXPONENT")]
    pub max_exponent: Option<u64>,
    /// Largest n for n!.
    #[arg(long, env = "STEPKTO_MAX_FACTORIAL")]
    pub max_factorial: Option<u64>,
    /// Largest exact integer any intermediate result may reach, in bits.
    #[arg(long, env = "STEPKTO_MAX_BITS")]
    pub max_bits: Option<u64>,
    /// Wall time per check, in milliseconds (per answer pair; for the symbolic judge, per
    /// whole solution). Always cut to what is left of the request deadline.
    #[arg(long, env = "STEPKTO_CHECK_TIME_MS")]
    pub check_time_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --addr {0:?}: expected HOST:PORT")]
    Addr(String),
    #[error("invalid value for {name}: {why}")]
    Value { name: &'static str, why: String },
}

/// Everything the service needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub database_url: String,
    pub limits: Limits,
    /// PRMs to load at start (the symbolic judge is always there).
    pub models: Vec<ModelSpec>,
    pub device: String,
    pub batch: BatchConfig,
    pub jobs: crate::jobs::JobsConfig,
    pub max_dataset_bytes: usize,
    pub max_eval_samples: usize,
    pub max_event_streams: usize,
    pub api_keys_file: Option<PathBuf>,
    pub api_keys: Option<String>,
    pub require_key_for_judging: bool,
}

/// Request-level limits of the HTTP service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub body_limit: usize,
    pub request_timeout_ms: u64,
    pub max_inflight: usize,
    /// Clock for a lone check on the async thread (`--inline-check-us`; 0: none).
    pub inline_check_us: u64,
    /// Shares of requests' checks run at once on the blocking pool (`--check-workers`).
    pub check_workers: usize,
    pub budget: Budget,
    pub options: Options,
    /// What the reward routes answer for each kind of verdict.
    pub rewards: RewardMap,
}

/// Numbers for each kind of verdict.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RewardMap {
    pub correct: f64,
    pub wrong: f64,
    /// The response has no final answer to compare.
    pub no_answer: f64,
    /// The check ran out of its budget, or the input was over a size limit.
    pub budget: f64,
}

impl Default for RewardMap {
    fn default() -> Self {
        RewardMap {
            correct: 1.0,
            wrong: 0.0,
            no_answer: 0.0,
            budget: 0.0,
        }
    }
}

impl ServeArgs {
    fn reward_map(&self) -> Result<RewardMap, ConfigError> {
        for (name, v) in [
            ("--reward-correct", self.reward_correct),
            ("--reward-wrong", self.reward_wrong),
            ("--reward-no-answer", self.reward_no_answer),
            ("--reward-budget", self.reward_budget),
        ] {
            if !v.is_finite() {
                return Err(ConfigError::Value {
                    name,
                    why: format!("must be a finite number, got {v}"),
                });
            }
        }
        Ok(RewardMap {
            correct: self.reward_correct,
            wrong: self.reward_wrong,
            no_answer: self.reward_no_answer,
            budget: self.reward_budget,
        })
    }
}

/// Two blocking-pool shares per core: one slow input (up to its time budget) does not take
/// a core from everyone else's checks, and the threads do not thrash (on two cores, cold
/// 64-item batches from 128 connections: 15.3-16.3k items/s unbounded, 20-25k with 2,
/// 24-30k with 4, 19-24k with 8).
pub fn default_check_workers() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 1024,
            body_limit: 8 * 1024 * 1024,
            request_timeout_ms: 30_000,
            max_inflight: 256,
            inline_check_us: 1000,
            check_workers: default_check_workers(),
            budget: Budget::default(),
            options: Options::default(),
            rewards: RewardMap::default(),
        }
    }
}

pub fn database_url(db: &DbArgs) -> String {
    db.database_url
        .clone()
        .unwrap_or_else(|| "sqlite://stepkto.db".to_string())
}

impl BudgetArgs {
    pub fn to_budget(&self) -> Result<Budget, ConfigError> {
        let mut b = Budget::default();
        let positive = |name: &'static str, v: u64| {
            if v == 0 {
                Err(ConfigError::Value {
                    name,
                    why: "must be positive".into(),
                })
            } else {
                Ok(v)
            }
        };
        if let Some(v) = self.max_solution_len {
            b.max_solution_len = positive("--max-solution-len", v as u64)? as usize;
        }
        if let Some(v) = self.max_answer_len {
            b.max_answer_len = positive("--max-answer-len", v as u64)? as usize;
        }
        if let Some(v) = self.max_depth {
            b.max_depth = positive("--max-depth", v as u64)? as usize;
            if b.max_depth > 10_000 {
                return Err(ConfigError::Value {
                    name: "--max-depth",
                    why: "at most 10000 (stack safety)".into(),
                });
            }
        }
        if let Some(v) = self.max_exponent {
            b.max_exponent = positive("--max-exponent", v)?;
        }
        if let Some(v) = self.max_factorial {
            b.max_factorial = positive("--max-factorial", v)?;
        }
        if let Some(v) = self.max_bits {
            b.max_bits = positive("--max-bits", v)?;
        }
        if let Some(v) = self.check_time_ms {
            b.time_ms = positive("--check-time-ms", v)?;
        }
        Ok(b)
    }
}

impl ServeArgs {
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let addr = self
            .addr
            .parse()
            .map_err(|_| ConfigError::Addr(self.addr.clone()))?;
        if self.max_batch == 0 {
            return Err(ConfigError::Value {
                name: "--max-batch",
                why: "must be positive".into(),
            });
        }
        if self.body_limit < 1024 {
            return Err(ConfigError::Value {
                name: "--body-limit",
                why: "at least 1024 bytes".into(),
            });
        }
        let j = &self.jobs;
        if j.job_lease_secs < 2 {
            return Err(ConfigError::Value {
                name: "--job-lease-secs",
                why: "at least 2 seconds".into(),
            });
        }
        if j.train_threads == 0 {
            return Err(ConfigError::Value {
                name: "--train-threads",
                why: "must be positive".into(),
            });
        }
        Ok(Config {
            addr,
            jobs: crate::jobs::JobsConfig {
                dir: j.jobs_dir.clone(),
                max_concurrent: j.max_jobs,
                train_threads: j.train_threads,
                lease_secs: j.job_lease_secs,
                keep_rounds: j.keep_rounds,
                poll_ms: j.job_poll_ms.max(10),
                ..Default::default()
            },
            max_dataset_bytes: j.max_dataset_bytes.max(1024),
            max_eval_samples: j.max_eval_samples,
            max_event_streams: j.max_event_streams,
            api_keys_file: j.api_keys_file.clone(),
            api_keys: j.api_keys.clone(),
            require_key_for_judging: j.require_key_for_judging,
            models: self.models.specs()?,
            device: self.models.device.clone(),
            batch: self.models.batch()?,
            database_url: database_url(&self.db),
            limits: Limits {
                max_batch: self.max_batch,
                body_limit: self.body_limit,
                request_timeout_ms: self.request_timeout_ms.max(1),
                max_inflight: self.max_inflight.max(1),
                inline_check_us: self.inline_check_us,
                check_workers: match self.check_workers {
                    0 => default_check_workers(),
                    n => n,
                },
                budget: self.budget.to_budget()?,
                options: Options::default(),
                rewards: self.reward_map()?,
            },
        })
    }
}
