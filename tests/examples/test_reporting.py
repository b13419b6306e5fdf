"""Report helpers shared by the CIFAR tables: signed differences, the provenance line, the paper's claims against
ours (verdicts and the generated summary) and what a budget can show."""

from __future__ import annotations

from typing import Any

from examples.cifar.reporting import (
    CONTRADICTED,
    FASTER,
    NOT_RUN,
    REPRODUCED,
    SAVES,
    UNDECIDED,
    Claim,
    budget_note,
    comparison,
    convergence,
    device,
    provenance,
    signed,
    summary,
)


def _record(command: str, date: str, gpu: str | None = None) -> dict[str, Any]:
    machine = {"cpu": "AMD EPYC", "cores": 2, **({"gpu": gpu} if gpu else {})}
    return {
        "budget_description": "10 epochs",
        "data": "offline copy",
        "command": command,
        "date": date,
        "machine": machine,
    }


def test_signed_keeps_the_sign_and_says_when_there_is_nothing() -> None:
    assert signed([1.0, 3.0]) == "+2.00 ± 1.41"
    assert signed([-1.25]) == "−1.25"
    assert signed([]) == "n/a"


def test_provenance_names_one_command_once() -> None:
    text = provenance([_record("table2 --seeds 2", "2026-11-20"), _record("table2 --seeds 2", "2026-11-21")])
    assert text == (
        "Budget: 10 epochs. Data: offline copy. Command: `table2 --seeds 2` (2 records; AMD EPYC, "
        "2 cores; 2026-11-20 to 2026-11-21)."
    )


def test_provenance_names_every_command_and_machine_that_wrote_a_record() -> None:
    records = [
        _record("table2 --seeds 3", "2026-11-22"),
        _record("table2 --seeds 2", "2026-11-20"),
        _record("table2 --seeds 2", "2026-11-20"),
        _record("table2 --seeds 3", "2026-11-23", gpu="H100"),
    ]
    text = provenance(reversed(records))  # any order in, the same text out
    assert text == provenance(records)
    assert text.startswith("Budget: 10 epochs. Data: offline copy. Commands: `table2 --seeds 2` (2 records; ")
    assert "`table2 --seeds 3` (1 record; AMD EPYC, 2 cores; 2026-11-22)" in text
    assert "`table2 --seeds 3` (1 record; H100; AMD EPYC, 2 cores; 2026-11-23)" in text


def test_a_table_of_seeds_trained_in_two_precisions_says_so() -> None:
    native = {**_run("cpu-full"), "machine": {"cpu": "Intel Xeon", "cores": 2}, "precision": "bfloat16 autocast"}
    emulated = {**_run("cpu-full"), "precision": "float32", "command": "table2 --seeds 3"}
    assert device([native, emulated]) == (
        "CPU only (AMD EPYC, 2 cores, float32); CPU only (Intel Xeon, 2 cores, bfloat16 autocast)"
    )
    assert "(1 record; AMD EPYC, 2 cores, float32; 2026-11-22)" in provenance([native, emulated])


def test_a_paper_claim_is_reproduced_contradicted_or_undecided_by_our_seeds() -> None:
    reproduced = Claim("grasp p=1", "accuracy − dense", 0.40, (1.0, 2.0, 1.5))
    contradicted = Claim("snip p=3", "accuracy − dense", -0.50, (1.2, 1.5, 1.4))
    spread = Claim("grasp p=2", "accuracy − dense", 0.72, (2.0, -1.5, 0.5))  # std 1.75 > |mean| 0.33
    one_seed = Claim("kl p=3 θ_0", "accuracy − dense", 0.74, (3.36,))
    not_run = Claim("grasp p=5", "accuracy − dense", 0.12)
    tie = Claim("snip p=2", "accuracy − dense", 0.0, (-1.0, -1.2))  # the paper's 0.00 wins; ours lose
    assert [c.paper_verdict for c in (reproduced, contradicted, spread, tie)] == ["wins", "loses", "wins", "wins"]
    assert [c.our_verdict for c in (reproduced, contradicted, spread, one_seed, not_run, tie)] == [
        "wins",
        "wins",
        "undecided (spread ≥ effect)",
        "undecided (1 seed)",
        "",
        "loses",
    ]
    assert [c.status for c in (reproduced, contradicted, spread, one_seed, not_run, tie)] == [
        REPRODUCED,
        CONTRADICTED,
        UNDECIDED,
        UNDECIDED,
        NOT_RUN,
        CONTRADICTED,
    ]
    assert Claim("p=3", "accuracy − dense", None, (1.0, 2.0)).status == ""  # the paper prints none: no claim


def test_counted_and_cost_claims() -> None:
    flops = Claim("p=4", "FLOPs saved", 34.13, (27.36, 27.43), SAVES, "%", exact=True, tolerance=0.5)
    assert (
        flops.status == CONTRADICTED and flops.our_verdict == "differs by −6.74" and flops.ours_cell == "27.36%–27.43%"
    )
    close = Claim("p=1", "FLOPs saved", 6.82, (6.86,), SAVES, "%", exact=True, tolerance=0.5)
    assert close.status == REPRODUCED and close.our_verdict == "matches (within 0.5)"
    memory = Claim("p=1", "memory saved", 10.13, (10.33,), SAVES, "%", exact=True)  # counted: one value decides
    assert memory.status == REPRODUCED and memory.ours_cell == "10.33%"
    timed = Claim("p=1", "speed-up (side by side)", 1.10, (1.06,), FASTER, "x", exact=True, basis="timed")
    rows = comparison([memory, timed])
    assert "| 10.33% | counted | saves | reproduced |" in rows[2]
    assert "| 1.06x | timed | faster | reproduced |" in rows[3]  # a median of steps, not a count
    slower = Claim("p=1", "speed-up", 1.10, (0.95, 0.97, 0.96), FASTER, "x")
    assert slower.paper_verdict == "faster" and slower.our_verdict == "slower" and slower.status == CONTRADICTED
    assert slower.ours_cell == "0.96 ± 0.01x" and slower.format(1.1) == "1.10x"
    shared = Claim("p=1", "CO2 saved", 11.11, (), SAVES, "%", excluded="not timed alone")  # run, but not counted
    assert (shared.status, shared.our_verdict, shared.ours_cell) == (UNDECIDED, "undecided (not timed alone)", "n/a")


def test_the_summary_says_what_is_reproduced_contradicted_undecided_and_not_run() -> None:
    claims = [
        Claim("grasp p=1", "accuracy − dense", 0.40, (1.0, 2.0, 1.5)),
        Claim("snip p=3", "accuracy − dense", -0.50, (1.2, 1.5, 1.4)),
        Claim("grasp p=2", "accuracy − dense", 0.72, (2.0, -1.5, 0.5)),
        Claim("grasp p=5", "accuracy − dense", 0.12),
        Claim("l1 p=3", "accuracy − dense", None, (1.0, 2.0)),  # not the paper's: not counted
    ]
    assert summary(claims, "resnet32, budget `cpu`", run="python -m x", caveat="Far.") == (
        "resnet32, budget `cpu`: of the paper's 4 numbers, ours measure 3: they reproduce 1 (grasp p=1), "
        "contradict 1 (snip p=3 (paper −0.50 loses, ours +1.37 ± 0.15 wins)), cannot decide 1 (grasp p=2: "
        "spread ≥ effect). Not run here: grasp p=5 (`python -m x`). Far."
    )
    one_seed = [Claim(f"kl p=3 θ_{e}", "accuracy − dense", 0.1, (2.0,)) for e in (0, 25)]
    assert (
        summary(one_seed, "s")
        == "s: of the paper's 2 numbers, ours measure 2: they cannot decide 2 (all of them: 1 seed)."
    )
    assert (
        summary(claims[3:4], "s", run="cmd")
        == "s: none of the paper's 1 numbers is measured here yet (`cmd` measures them)."
    )
    assert summary(claims[4:], "s") == "s: the paper prints no number for these tickets."
    table = comparison(claims[:2])
    assert table[0] == "| ticket | measure | paper | paper's verdict | ours | seeds | our verdict | claim |"
    assert table[3] == "| snip p=3 | accuracy − dense | −0.50 | loses | +1.37 ± 0.15 | 3 | wins | contradicted |"


def _run(budget: str, gpu: str | None = None) -> dict[str, Any]:
    return {**_record("table2", "2026-11-22", gpu), "budget": budget, "budget_description": f"{budget} budget"}


def test_the_budget_note_says_which_budget_and_device_and_what_the_budget_can_show() -> None:
    early = budget_note([_run("cpu10")], "resnet32", [44.0, 46.0])
    assert early.startswith("**Budget `cpu10`, on CPU only (AMD EPYC, 2 cores).** The dense resnet32 reaches 45.00%")
    assert "(2 seeds, spread ±1.41 pp; He et al. 2016: 92.49% converged, 47.5 pp higher)" in early
    assert "Far from converged" in early and "cannot show whether tickets win at convergence" in early
    assert convergence("resnet32", [44.0, 46.0]).startswith("This budget is far from converged (dense 45.0%")
    converged = budget_note([_run("gpu", gpu="1x H100")], "resnet32", [92.1], "Costs: device.")
    assert converged.startswith("**Budget `gpu`, on GPU (1x H100; AMD EPYC, 2 cores).** The dense resnet32 reaches")
    assert "(one seed; He et al. 2016: 92.49% converged). Close to converged" in converged
    assert converged.endswith("Costs: device.") and convergence("resnet32", [92.1]) == ""
    assert "no converged accuracy of resnet20" in budget_note([_run("smoke")], "resnet20", [10.0])
