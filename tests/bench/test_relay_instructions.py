"""bench relay_ab --instructions: the cachegrind total it reads and the per-request arithmetic (no valgrind
run here: the bench itself takes ~100 s)."""

from __future__ import annotations

import pytest

from bench import relay_ab, relay_instructions

CACHEGRIND_OUT = """\
desc: I1 cache:         32768 B, 64 B, 8-way associative
cmd: python -m llm_relay.server --config relay.toml
events: Ir
fl=???
fn=0x0000000000001100
0 12
summary: 517726627
"""


def test_reads_the_instruction_total_from_the_summary_line():
    assert relay_instructions.cachegrind_total(CACHEGRIND_OUT) == 517_726_627
    with_cache_sim = "events: Ir I1mr ILmr\nsummary: 900 7 3\n"
    assert relay_instructions.cachegrind_total(with_cache_sim) == 900


@pytest.mark.parametrize(
    "text", ["", "events: Ir\n", "events: Dr\nsummary: 5\n", "events: Ir I1mr\nsummary: 5\n"]
)
def test_refuses_files_without_an_instruction_total(text):
    with pytest.raises(ValueError):
        relay_instructions.cachegrind_total(text)


def test_start_up_cancels_out_of_the_per_request_figure():
    start_up, plain, sealed = 500_000_000, 430_000, 620_000
    totals = {
        name: start_up + p * plain + e * sealed for name, (p, e) in relay_instructions.plan(50, 150).items()
    }
    assert relay_instructions.figures(totals, 50, 150) == {"plain": plain, "envelope": sealed}
    with pytest.raises(ValueError):
        relay_instructions.per_request(1, 2, 150, 50)


def test_the_plan_varies_one_path_at_a_time():
    runs = relay_instructions.plan(50, 150)
    assert runs == {"A": (50, 50), "B": (150, 50), "C": (50, 150)}


def test_valgrind_counts_instructions_only(tmp_path):
    argv = relay_instructions.valgrind_argv(
        tmp_path / "cg.out", ["/venv/bin/python", "-m", "llm_relay.server"]
    )
    assert argv[:4] == ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--branch-sim=no"]
    assert argv[-3:] == ["/venv/bin/python", "-m", "llm_relay.server"]
    assert f"--cachegrind-out-file={tmp_path / 'cg.out'}" in argv


def test_instructions_mode_needs_n1_below_n2(capsys):
    with pytest.raises(SystemExit):
        relay_ab.main(["--before", "a", "--after", "b", "--instructions", "--n1", "150", "--n2", "50"])
    assert "0 < N1 < N2" in capsys.readouterr().err


def test_instructions_mode_hands_both_interpreters_to_the_counting_run(monkeypatch):
    calls = []
    monkeypatch.setattr(relay_instructions, "run", lambda *args: calls.append(args))
    relay_ab.main(["--before", "old/python", "--after", "new/python", "--instructions", "--no-control"])
    assert calls == [({"before": "old/python", "after": "new/python"}, 50, 250, False)]
