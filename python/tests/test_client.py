"""The client and the framework adapters against the real server (issue 14, item 2)."""

import asyncio
import pickle

import httpx
import pytest

import stepkto
from stepkto import AsyncClient, Client, StepktoError
from stepkto.adapters import TRLReward, compute_score, compute_score_batched, reward_func


def test_verify_and_typed_results(server):
    with Client(server) as c:
        v = c.verify("\\frac{3}{4}", "so the answer is \\boxed{0.75}")
        assert v.equivalent and v.extracted == "0.75" and v.reason.startswith("equal")
        again = c.verify("\\frac{3}{4}", "so the answer is \\boxed{0.75}")
        assert again.cached
        assert not c.verify("2", "\\boxed{3}").equivalent


def test_verify_many_keeps_order_and_reports_item_errors(server):
    pairs = [(str(i), f"\\boxed{{{i if i % 3 else i + 1}}}") for i in range(150)]
    pairs[7] = ("1", "x" * 300_000)  # over the server's solution budget: an item error
    with Client(server) as c:
        out = c.verify_many(pairs, batch=32, concurrency=3)
    assert len(out) == 150
    assert isinstance(out[7], StepktoError)
    for i, v in enumerate(out):
        if i != 7:
            assert v.equivalent == (i % 3 != 0), i


def test_async_client(server):
    async def go():
        async with AsyncClient(server) as c:
            r = await c.reward("", "\\boxed{4}", "4")
            many = await c.verify_many([("1/2", "0.5"), ("2", "3")] * 50, batch=16, concurrency=4)
            return r, many
    r, many = asyncio.run(go())
    assert r.reward == 1.0 and r.correct
    assert [v.equivalent for v in many[:2]] == [True, False] and len(many) == 100


def test_errors_are_raised_with_the_servers_message(server):
    with Client(server) as c:
        with pytest.raises(StepktoError) as e:
            c.post("/v1/verify", {"reference": "1"})
        assert e.value.status == 422 and "candidate" in e.value.message


def test_retries_on_429_and_5xx_then_succeeds():
    calls = {"n": 0}

    def handler(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(429 if calls["n"] == 1 else 503, json={"error": "busy", "error_type": "overloaded"})
        return httpx.Response(200, json={"equivalent": True, "extracted": "1", "reason": {"tag": "equal_exact", "message": ""}})

    c = Client("http://stepkto.test", backoff=0.001)
    c._http = httpx.Client(base_url="http://stepkto.test", transport=httpx.MockTransport(handler))
    assert c.verify("1", "1").equivalent
    assert calls["n"] == 3
    c.retries = 1
    calls["n"] = 0
    with pytest.raises(StepktoError) as e:
        c.verify("1", "1")
    assert e.value.status == 503


def test_judge(server):
    with Client(server) as c:
        j = c.judge("Compute 7 * 8 - 6.", ["$7 \\times 8 = 56$.", "$56 - 6 = 40$.", "So 50."])
    assert j.first_wrong_step == 1
    assert j.steps[1].symbolic == "refuted" and "40" in j.steps[1].detail


def test_trl_reward_strings_chats_and_pickling(server):
    f = TRLReward()
    assert f.__name__ == "stepkto_correctness"
    prompts = ["What is 2+2?", "What is 3+3?"]
    strings = ["2+2 = \\boxed{4}", "\\boxed{7}"]
    assert f(prompts=prompts, completions=strings, solution=["4", "6"]) == [1.0, 0.0]
    chats = [[{"role": "assistant", "content": "so \\boxed{4}"}], [{"role": "assistant", "content": "it is \\boxed{6}"}]]
    g = pickle.loads(pickle.dumps(f))  # TRL and datasets pickle reward functions
    assert g(prompts=prompts, completions=chats, solution=["4", "6"]) == [1.0, 1.0]
    h = TRLReward(solution_column="answer")
    assert h(prompts=prompts, completions=strings, answer=["4", "6"]) == [1.0, 0.0]
    with pytest.raises(KeyError):
        h(prompts=prompts, completions=strings, solution=["4", "6"])
    # a MATH-style solution column (a worked solution with its box) and numeric answers;
    # several chunks in flight at once come back in order
    k = TRLReward(batch=8, concurrency=3)
    worked = "We add: $2 + 2 = 4$, so the answer is $\\boxed{4}$."
    many = k(prompts=["p"] * 30, completions=["\\boxed{4}", "\\boxed{4}", "\\boxed{5}"] * 10,
             solution=[worked, 4, 4] * 10)
    assert many == [1.0, 1.0, 0.0] * 10
    with pytest.raises(ValueError):
        k(prompts=prompts, completions=strings, solution=["4"])


def test_verl_compute_score(server):
    assert compute_score("math", "so \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert compute_score("math", "so \\boxed{1}", "0.5") == 0.0
    many = compute_score_batched(["math"] * 300, ["\\boxed{1}", "\\boxed{2}"] * 150, ["1"] * 300, [None] * 300)
    assert many == [1.0, 0.0] * 150


def test_openrlhf_reward_func(server):
    prompt = "<|im_start|>user\nFor example \\boxed{7}. What is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    out = reward_func([prompt + "\\boxed{4}<|im_end|>", prompt + "no idea<|im_end|>"], [prompt, prompt], ["4", "4"])
    rewards = out["rewards"]
    assert [float(x) for x in rewards] == [1.0, 0.0]
    assert [float(x) for x in out["extra_logs"]["has_answer"]] == [1.0, 0.0]


def test_package_exports():
    assert stepkto.Client and stepkto.AsyncClient and stepkto.Verdict
