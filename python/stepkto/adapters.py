"""Reward functions in the shapes RL frameworks call, backed by a stepkto server.

The server's address comes from the `url` argument or `STEPKTO_URL` (default
http://127.0.0.1:8080); an API key from `STEPKTO_API_KEY`. The numbers are the server's
reward map (`--reward-correct`, `--reward-wrong`, ...).

- TRL: `TRLReward()` is a `reward_funcs` entry for `GRPOTrainer`: called with `prompts`,
  `completions` (strings, or chat messages) and the dataset's columns as keyword lists.
- verl: `compute_score(data_source, solution_str, ground_truth, extra_info=None)` and the
  batched `compute_score_batched(data_sources, solution_strs, ground_truths, extra_infos)`.
- OpenRLHF: `reward_func(queries, prompts, labels)` for a local reward file (a remote one
  is just `--remote_rm_url http://HOST:8080/get_reward`).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from . import Client

__all__ = ["TRLReward", "compute_score", "compute_score_batched", "reward_func"]


def _url(url: Optional[str]) -> str:
    return url or os.environ.get("STEPKTO_URL", "http://127.0.0.1:8080")


def _text(completion: Any) -> str:
    """A completion as text: a string, or the last assistant message of a chat."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        for m in reversed(completion):
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant":
                c = m.get("content", "")
                if isinstance(c, list):  # content parts
                    return "".join(p.get("text", "") for p in c if isinstance(p, dict))
                return str(c)
        return ""
    return str(completion)


def _label(r: Any) -> Any:
    """A reference answer as JSON: numbers and None as they are (the server reads 3 as "3"
    and None as no reference), anything else as its text."""
    return r if r is None or isinstance(r, (str, int, float)) else str(r)


class TRLReward:
    """A picklable TRL reward function: the HTTP client is made in each process on first
    use and never pickled. `solution_column` names the reference-answer column."""

    def __init__(self, url: Optional[str] = None, solution_column: str = "solution", batch: int = 64,
                 concurrency: int = 4):
        self.url = _url(url)
        self.solution_column = solution_column
        self.batch, self.concurrency = batch, concurrency
        self.__name__ = "stepkto_correctness"  # TRL logs rewards under the function's name
        self._client: Optional[Client] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def _c(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, api_key=os.environ.get("STEPKTO_API_KEY"))
        return self._client

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list:
        refs = kwargs.get(self.solution_column)
        if refs is None:
            raise KeyError(f"the dataset has no {self.solution_column!r} column (the reference answers); "
                           f"name it with TRLReward(solution_column=...)")
        if len(refs) != len(completions):
            raise ValueError(f"{len(refs)} {self.solution_column!r} values for {len(completions)} completions")
        body = {"query": [_text(c) for c in completions], "labels": [_label(r) for r in refs]}
        n = max(1, self.batch)
        parts = [{k: v[i:i + n] for k, v in body.items()} for i in range(0, len(completions), n)]
        client = self._c()
        if len(parts) <= 1 or self.concurrency <= 1:
            answers = [client.post("/get_reward", p) for p in parts]
        else:
            # httpx.Client is thread-safe; at most `concurrency` chunks in flight, in order
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                answers = list(pool.map(lambda p: client.post("/get_reward", p), parts))
        return [float(r) for a in answers for r in a["rewards"]]


_shared: dict = {}


def _client(url: Optional[str] = None) -> Client:
    u = _url(url)
    c = _shared.get(u)
    if c is None:
        c = _shared[u] = Client(u, api_key=os.environ.get("STEPKTO_API_KEY"))
    return c


def compute_score(data_source: Any, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any) -> float:
    """verl's reward function: 1 / 0 (the server's map) for the response's final answer."""
    return _client(kwargs.get("url")).reward("", solution_str, ground_truth).reward


def compute_score_batched(data_sources: list, solution_strs: list, ground_truths: list, extra_infos: Any = None,
                          **kwargs: Any) -> list:
    """verl's batched form (the batch reward manager): one request per 256 responses."""
    c = _client(kwargs.get("url"))
    out: list = []
    for i in range(0, len(solution_strs), 256):
        r = c.get_reward(list(solution_strs[i:i + 256]), None, [str(g) for g in ground_truths[i:i + 256]])
        out.extend(float(x) for x in r["rewards"])
    return out


def reward_func(queries: list, prompts: list, labels: list, **kwargs: Any) -> dict:
    """OpenRLHF's local `reward_func`: the server's answer, as tensors when torch is there."""
    r = _client(kwargs.get("url")).get_reward(list(queries), list(prompts), list(labels))
    try:
        import torch
    except ImportError:
        return r
    return {
        "rewards": torch.tensor(r["rewards"], dtype=torch.float32),
        "scores": torch.tensor(r["scores"], dtype=torch.float32),
        "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in r["extra_logs"].items()},
    }
