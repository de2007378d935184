//! The OpenAPI document, generated from the handlers' annotations. The committed copy in
//! `openapi/openapi.json` is checked against it by a test.

use utoipa::OpenApi;

use super::{dash, datasets, error, evals, judge, ops, rewards, train, verify};

#[derive(OpenApi)]
#[openapi(
    info(title = "stepkto", description = "Judge mathematical reasoning: outcome checker, step judge, verdict cache."),
    paths(verify::verify, judge::judge, judge::models, datasets::create, datasets::list, datasets::get,
        train::create, train::list, train::get, train::cancel, train::metrics, train::events, train::rounds, train::samples,
        evals::create, evals::list, evals::get, evals::samples, evals::sample,
        dash::overview, dash::compare, dash::curves, dash::job_events,
        rewards::get_reward, rewards::reward, rewards::nemo_verify,
        ops::health, ops::info, ops::metrics),
    components(schemas(
        verify::VerifyRequest,
        verify::VerifyItem,
        verify::VerifyBatch,
        verify::VerifyResult,
        verify::VerifyBatchResponse,
        verify::BatchItem,
        verify::ItemError,
        error::ErrorBody,
        judge::JudgeRequest,
        judge::JudgeItem,
        judge::JudgeResult,
        judge::JudgeItemError,
        judge::JudgeResponse,
        judge::StepResult,
        judge::Aggregate,
        judge::ModelInfo,
        crate::judge::SymbolicCheck,
        crate::judge::Status,
        crate::outcome::Reason,
        crate::outcome::Mode,
        crate::outcome::Options,
        ops::Health,
        ops::Info,
        ops::LimitsInfo,
        ops::JobsInfo,
        datasets::DatasetCreated,
        datasets::BadLine,
        datasets::BadLines,
        crate::store::jobs::DatasetRow,
        crate::store::jobs::MetricRow,
        train::JobCreated,
        train::JobView,
        train::SamplesPage,
        evals::EvalCreated,
        evals::EvalView,
        evals::EvalList,
        evals::SampleView,
        evals::SamplePage,
        evals::BadSamples,
        crate::jobs::records::NewEval,
        crate::jobs::records::EvalSample,
        crate::jobs::records::EvalStep,
        dash::Overview,
        crate::jobs::dashboard::OverviewRow,
        crate::jobs::dashboard::Comparison,
        crate::jobs::dashboard::Curves,
        crate::jobs::dashboard::Series,
        rewards::GetRewardRequest,
        rewards::GetRewardResponse,
        rewards::RewardRequest,
        rewards::RewardResponse,
        rewards::StepOptions,
        crate::config::RewardMap,
    )),
    tags((name = "verify", description = "Outcome checking"), (name = "judge", description = "Stepwise judging"), (name = "train", description = "Datasets and training jobs"), (name = "evals", description = "Eval records: metrics and judged samples per model, round and dataset"), (name = "dashboard", description = "What the dashboard at / reads: the overview with Wilson intervals, comparisons, curves, live job states"), (name = "rewards", description = "Rewards in the shapes RL frameworks send: OpenRLHF /get_reward, slime and one-sample /v1/reward, NeMo Gym /verify"), (name = "ops", description = "Health, info, metrics"))
)]
pub struct ApiDoc;

impl ApiDoc {
    pub fn openapi_doc() -> utoipa::openapi::OpenApi {
        let mut doc = ApiDoc::openapi();
        doc.info.version = "v1".into();
        doc
    }
}

/// The document as committed: pretty JSON with a trailing newline, version-independent.
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi_doc()
        .to_pretty_json()
        .expect("OpenAPI document serialises");
    s.push('\n');
    s
}
