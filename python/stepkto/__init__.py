"""Client for the stepkto service (`stepkto serve`).

`Client` and `AsyncClient` wrap the HTTP API with typed results. Every request is retried
with exponential backoff (and jitter) on 429, 5xx and connection errors, up to `retries`
times; other 4xx are raised at once as `StepktoError`, with the server's message.
`verify_many` chunks a list of pairs into batch requests and caps how many are in flight.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import httpx

__all__ = [
    "AsyncClient",
    "Client",
    "JudgeResult",
    "Reward",
    "StepVerdict",
    "StepktoError",
    "Verdict",
]

DEFAULT_URL = "http://127.0.0.1:8080"
RETRY_STATUS = {429, 500, 502, 503, 504}


class StepktoError(Exception):
    """A request the server refused (4xx other than 429), or that kept failing."""

    def __init__(self, status: int, message: str, error_type: str = ""):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(frozen=True)
class Verdict:
    equivalent: bool
    extracted: Optional[str]
    reason: str
    message: str
    cached: bool = False

    @classmethod
    def from_json(cls, v: dict) -> "Verdict":
        r = v.get("reason") or {}
        return cls(bool(v["equivalent"]), v.get("extracted"), r.get("tag", ""), r.get("message", ""), bool(v.get("cached", False)))


@dataclass(frozen=True)
class Reward:
    reward: float
    correct: bool
    extracted: Optional[str]
    reason: str
    step_scores: Optional[list] = None

    @classmethod
    def from_json(cls, v: dict) -> "Reward":
        steps = v.get("steps")
        return cls(float(v["reward"]), bool(v["correct"]), v.get("extracted"), v.get("reason", ""),
                   steps.get("scores") if isinstance(steps, dict) else None)


@dataclass(frozen=True)
class StepVerdict:
    score: float
    label: bool
    symbolic: str
    detail: str


@dataclass(frozen=True)
class JudgeResult:
    steps: list = field(default_factory=list)
    first_wrong_step: int = -1

    @classmethod
    def from_json(cls, v: dict) -> "JudgeResult":
        steps = [StepVerdict(float(s["score"]), bool(s["label"]), s["symbolic"]["status"], s["symbolic"]["detail"]) for s in v["steps"]]
        return cls(steps, int(v["first_wrong_step"]))


def _raise_for(resp: httpx.Response) -> None:
    try:
        body = resp.json()
        msg, kind = body.get("error", resp.text), body.get("error_type", "")
    except ValueError:
        msg, kind = resp.text, ""
    raise StepktoError(resp.status_code, msg, kind)


def _backoff(attempt: int, base: float, cap: float) -> float:
    return min(cap, base * 2 ** attempt) * (0.5 + random.random() / 2)


def _chunks(items: Sequence, n: int) -> list:
    return [items[i:i + n] for i in range(0, len(items), n)]


class Client:
    """Synchronous client. `retries` counts the attempts after the first."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: Optional[str] = None, timeout: float = 60.0,
                 retries: int = 5, backoff: float = 0.2, max_backoff: float = 10.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def post(self, path: str, body: Any) -> Any:
        """POST JSON, retrying what can succeed later; returns the decoded answer."""
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.post(path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                time.sleep(_backoff(attempt, self.backoff, self.max_backoff))
                continue
            if resp.status_code in RETRY_STATUS and attempt < self.retries:
                time.sleep(_backoff(attempt, self.backoff, self.max_backoff))
                continue
            if resp.status_code >= 400:
                _raise_for(resp)
            return resp.json()
        raise AssertionError("unreachable")

    def verify(self, reference: str, candidate: str, mode: str = "auto") -> Verdict:
        return Verdict.from_json(self.post("/v1/verify", {"reference": reference, "candidate": candidate, "mode": mode}))

    def verify_many(self, pairs: Iterable, batch: int = 64, concurrency: int = 4) -> list:
        """Verdicts for (reference, candidate) pairs, in order: `batch` pairs per request,
        at most `concurrency` requests at once. A pair the server could not check (an item
        error) is a `StepktoError` in its place."""
        chunks = _chunks(list(pairs), max(1, batch))
        from concurrent.futures import ThreadPoolExecutor

        def one(chunk: list) -> list:
            items = [{"reference": r, "candidate": c} for r, c in chunk]
            out = self.post("/v1/verify", {"items": items})["items"]
            return [StepktoError(422, x["error"]["error"], x["error"]["error_type"]) if "error" in x else Verdict.from_json(x) for x in out]

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return [v for part in pool.map(one, chunks) for v in part]

    def reward(self, prompt: str, response: str, label: Any, steps: bool = False) -> Reward:
        return Reward.from_json(self.post("/v1/reward", {"prompt": prompt, "response": response, "label": label, "steps": steps}))

    def get_reward(self, queries: list, prompts: Optional[list], labels: list) -> dict:
        """OpenRLHF's call, answered as the server answers it."""
        return self.post("/get_reward", {"query": queries, "prompts": prompts, "labels": labels})

    def judge(self, problem: str, steps: list, model: Optional[str] = None, threshold: float = 0.5) -> JudgeResult:
        out = self.post("/v1/judge", {"model": model, "threshold": threshold, "items": [{"problem": problem, "steps": steps}]})
        item = out["items"][0]
        if "error" in item:
            raise StepktoError(422, item["error"]["error"], item["error"]["error_type"])
        return JudgeResult.from_json(item)


class AsyncClient:
    """The same calls for asyncio; `verify_many` keeps at most `concurrency` batches in flight."""

    def __init__(self, base_url: str = DEFAULT_URL, api_key: Optional[str] = None, timeout: float = 60.0,
                 retries: int = 5, backoff: float = 0.2, max_backoff: float = 10.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, headers=headers)
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def post(self, path: str, body: Any) -> Any:
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http.post(path, json=body)
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(_backoff(attempt, self.backoff, self.max_backoff))
                continue
            if resp.status_code in RETRY_STATUS and attempt < self.retries:
                await asyncio.sleep(_backoff(attempt, self.backoff, self.max_backoff))
                continue
            if resp.status_code >= 400:
                _raise_for(resp)
            return resp.json()
        raise AssertionError("unreachable")

    async def verify(self, reference: str, candidate: str, mode: str = "auto") -> Verdict:
        return Verdict.from_json(await self.post("/v1/verify", {"reference": reference, "candidate": candidate, "mode": mode}))

    async def verify_many(self, pairs: Iterable, batch: int = 64, concurrency: int = 4) -> list:
        chunks = _chunks(list(pairs), max(1, batch))
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(chunk: list) -> list:
            async with gate:
                out = await self.post("/v1/verify", {"items": [{"reference": r, "candidate": c} for r, c in chunk]})
            return [StepktoError(422, x["error"]["error"], x["error"]["error_type"]) if "error" in x else Verdict.from_json(x) for x in out["items"]]

        parts = await asyncio.gather(*(one(c) for c in chunks))
        return [v for part in parts for v in part]

    async def reward(self, prompt: str, response: str, label: Any, steps: bool = False) -> Reward:
        return Reward.from_json(await self.post("/v1/reward", {"prompt": prompt, "response": response, "label": label, "steps": steps}))
