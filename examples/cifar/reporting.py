"""What the table reports share: mean ± std over seeds, signed differences, grouping and provenance lines, what a
budget can show, and the paper's numbers next to ours with a verdict for each and a generated summary.

A claim of the paper is one of its numbers read as a verdict: a ticket *wins* when its accuracy is at least the
dense network's (difference ≥ 0 pp; a printed 0.00 wins), it *saves* when its cost is below the dense network's,
it is *faster* when its speed-up is at least 1. Our verdict on the same claim comes from our seeds: decided when
the mean lies further from the threshold than the seed spread (one standard deviation), undecided otherwise
(and with one seed, which has no spread); a counted quantity (FLOPs, parameters, memory) decides from its one value.
The claim is *reproduced* when both verdicts agree, *contradicted* when they differ, *undecided* when ours is.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTRADICTED",
    "CONVERGED",
    "FASTER",
    "LAYER_AHEAD",
    "NOT_RUN",
    "REPRODUCED",
    "SAVES",
    "UNDECIDED",
    "WINS",
    "Claim",
    "Section",
    "Sense",
    "budget_note",
    "by_setting",
    "by_ticket",
    "command",
    "comparison",
    "convergence",
    "device",
    "hardware",
    "mean_std",
    "paper_only",
    "provenance",
    "signed",
    "summary",
    "table_text",
    "trained_on",
]


def mean_std(values: list[float]) -> str:
    """``"m ± s"`` over seeds (just ``"m"`` for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def signed(diffs: list[float]) -> str:
    """A difference in points with its sign (``+0.40 ± 0.10``, ``−1.20``); ``n/a`` without values."""
    if not diffs:
        return "n/a"
    text = mean_std(diffs)
    return text.replace("-", "−", 1) if text.startswith("-") else "+" + text


def by_setting(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (architecture, budget), sorted."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["arch"], r["budget"]), []).append(r)
    return dict(sorted(groups.items()))


def by_ticket(records: Iterable[dict[str, Any]]) -> list[tuple[tuple[str, int], list[dict[str, Any]]]]:
    """Records grouped by (criterion, p), one group per ticket over the seeds; dense first, then sorted."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["criterion"], r["p"]), []).append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0][0] != "dense", kv[0]))


def provenance(records: Iterable[dict[str, Any]]) -> str:
    """Which budget, data copy, commands and machines produced the records of a table section.

    Every distinct command is named with the number of records it wrote, its machine and dates, so that a table
    filled by several invocations (say, another seed added later) still says where each number came from.
    """
    records = list(records)
    budgets = sorted({r["budget_description"] for r in records})
    data = sorted({r["data"] for r in records})
    runs: dict[tuple[str, str], list[str]] = {}
    for r in records:
        runs.setdefault((r["command"], trained_on(r)), []).append(r["date"])
    commands = "; ".join(
        f"`{command}` ({len(dates)} record{'s' * (len(dates) > 1)}; {machine}; {_span(dates)})"
        for (command, machine), dates in sorted(runs.items(), key=lambda kv: (min(kv[1]), kv[0]))
    )
    return f"Budget: {' / '.join(budgets)}. Data: {' / '.join(data)}. Command{'s' * (len(runs) > 1)}: {commands}."


def _span(dates: list[str]) -> str:
    first, last = min(dates), max(dates)
    return first if first == last else f"{first} to {last}"


CONVERGED = {"resnet32": 92.49, "resnet56": 93.03}
"""Dense test accuracy (%) at convergence, He et al. 2016, Table 6 (164 epochs on all 50,000 images): what a budget's
dense network is measured against to say how far from converged it is."""
FAR_FROM_CONVERGED = 5.0  # points below CONVERGED from which a budget's differences say nothing about convergence
REPRODUCED, CONTRADICTED, UNDECIDED, NOT_RUN = "reproduced", "contradicted", "undecided", "not run"


@dataclass(frozen=True)
class Sense:
    """How a measure gives a verdict: at least ``threshold`` reads ``good``, below it ``bad``."""

    threshold: float
    good: str
    bad: str

    def word(self, value: float) -> str:
        return self.good if value >= self.threshold else self.bad


WINS = Sense(0.0, "wins", "loses")  # ticket - dense accuracy, pp
SAVES = Sense(0.0, "saves", "costs more")  # percent saved against dense
FASTER = Sense(1.0, "faster", "slower")  # speed-up against dense
LAYER_AHEAD = Sense(0.0, "layer ahead", "filter ahead")  # layer - filter ticket accuracy, pp


@dataclass(frozen=True)
class Claim:
    """One of the paper's numbers next to ours: ``paper`` (None where the paper prints none) and ``ours``, one value
    per seed (empty where not run); ``exact`` for a counted quantity that one value decides. With ``tolerance``,
    the claim is the number itself (ours within ``tolerance`` of the paper's), not its side of the threshold.
    ``excluded``: why the runs there are do not count (``ours`` then empty): the claim is undecided, not unrun.
    ``basis``: how an ``exact`` value was obtained, shown in place of the number of seeds."""

    ticket: str
    measure: str
    paper: float | None
    ours: tuple[float, ...] = ()
    sense: Sense = WINS
    unit: str = "pp"
    exact: bool = False
    tolerance: float | None = None
    missing: str = "not run"
    paper_missing: str = "not printed"
    excluded: str = ""
    basis: str = "counted"

    @property
    def paper_verdict(self) -> str:
        return "" if self.paper is None else self.sense.word(self.paper)

    @property
    def decided(self) -> bool:
        """Whether our values decide a verdict: counted, or several seeds whose spread is below the effect."""
        if not self.ours:
            return False
        if self.exact or self.tolerance is not None:
            return True
        if len(self.ours) < 2:
            return False
        spread = statistics.stdev(self.ours)
        return spread == 0 or abs(statistics.mean(self.ours) - self.sense.threshold) > spread

    @property
    def our_verdict(self) -> str:
        if not self.ours:
            return f"undecided ({self.excluded})" if self.excluded else ""
        mean = statistics.mean(self.ours)
        if self.tolerance is not None and self.paper is not None:
            off = mean - self.paper
            if abs(off) <= self.tolerance:
                return f"matches (within {self.tolerance:g})"
            return f"differs by {off:+.2f}".replace("-", "−")
        if not self.decided:
            return "undecided (1 seed)" if len(self.ours) < 2 else "undecided (spread ≥ effect)"
        return self.sense.word(mean)

    @property
    def status(self) -> str:
        """``reproduced``, ``contradicted``, ``undecided`` or ``not run``; empty where the paper prints no number."""
        if self.paper is None:
            return ""
        if not self.ours:
            return UNDECIDED if self.excluded else NOT_RUN
        if not self.decided:
            return UNDECIDED
        if self.tolerance is not None:
            return REPRODUCED if self.our_verdict.startswith("matches") else CONTRADICTED
        return REPRODUCED if self.our_verdict == self.paper_verdict else CONTRADICTED

    def format(self, value: float) -> str:
        if self.unit == "pp":
            return f"{value:+.2f}".replace("-", "−") if value else "0.00"
        return f"{value:.2f}{self.unit}"

    @property
    def ours_cell(self) -> str:
        if not self.ours:
            return "n/a" if self.excluded else self.missing
        if self.exact:
            low, high = min(self.ours), max(self.ours)
            return self.format(low) if low == high else f"{self.format(low)}–{self.format(high)}"
        if self.unit == "pp":
            return signed(list(self.ours))
        return f"{mean_std(list(self.ours))}{self.unit}"


def comparison(claims: Sequence[Claim]) -> list[str]:
    """The Markdown table of the paper's numbers next to ours: both verdicts and whether ours reproduce the paper's."""
    lines = [
        "| ticket | measure | paper | paper's verdict | ours | seeds | our verdict | claim |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        paper = c.paper_missing if c.paper is None else c.format(c.paper)
        seeds = c.basis if c.exact and c.ours else str(len(c.ours)) if c.ours else ""
        lines.append(
            f"| {c.ticket} | {c.measure} | {paper} | {c.paper_verdict} | {c.ours_cell} | {seeds} | "
            f"{c.our_verdict} | {c.status} |"
        )
    return lines


def summary(claims: Sequence[Claim], setting: str, *, run: str = "", caveat: str = "") -> str:
    """One generated sentence on what our runs of ``setting`` make of the paper's claims; ``run``: the command that
    measures what is not run yet; ``caveat``: what the budget leaves open (:func:`convergence`)."""
    claims = [c for c in claims if c.paper is not None]
    if not claims:
        return f"{setting}: the paper prints no number for these tickets."
    several = len({c.measure for c in claims}) > 1

    def name(c: Claim) -> str:
        return f"{c.ticket} {c.measure}" if several else c.ticket

    def values(c: Claim) -> str:
        if c.tolerance is not None:
            return f"{name(c)} (paper {c.format(c.paper or 0.0)}, ours {c.ours_cell}: {c.our_verdict})"
        return f"{name(c)} (paper {c.format(c.paper or 0.0)} {c.paper_verdict}, ours {c.ours_cell} {c.our_verdict})"

    groups = {s: [c for c in claims if c.status == s] for s in (REPRODUCED, CONTRADICTED, UNDECIDED, NOT_RUN)}
    measured = len(claims) - len(groups[NOT_RUN])
    if not measured:
        return f"{setting}: none of the paper's {len(claims)} numbers is measured here yet" + (
            f" (`{run}` measures them)." if run else "."
        )

    def names(group: list[Claim]) -> str:
        return "all of them" if len(group) == measured > 1 else "; ".join(map(name, group))

    parts = []
    if groups[REPRODUCED]:
        parts.append(f"reproduce {len(groups[REPRODUCED])} ({names(groups[REPRODUCED])})")
    if groups[CONTRADICTED]:
        parts.append(f"contradict {len(groups[CONTRADICTED])} ({'; '.join(map(values, groups[CONTRADICTED]))})")
    if groups[UNDECIDED]:
        undecided = groups[UNDECIDED]
        reasons = sorted({c.our_verdict.removeprefix("undecided ").strip("()") for c in undecided})
        parts.append(f"cannot decide {len(undecided)} ({names(undecided)}: {', '.join(reasons)})")
    text = f"{setting}: of the paper's {len(claims)} numbers, ours measure {measured}"
    text += (": they " + ", ".join(parts) if parts else "") + "."
    if groups[NOT_RUN]:
        text += f" Not run here: {'; '.join(map(name, groups[NOT_RUN]))}" + (f" (`{run}`)." if run else ".")
    return f"{text} {caveat}".strip()


def hardware(record: dict[str, Any]) -> str:
    """The machine of a record in words: its GPU, CPU model and cores."""
    m = record.get("machine") or {}
    text = f"{m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores"
    return f"{m['gpu']}; {text}" if m.get("gpu") else text


def trained_on(record: dict[str, Any]) -> str:
    """The machine of a record and what its training computed in (costs compare only within one of these)."""
    return f"{hardware(record)}, {record['precision']}" if record.get("precision") else hardware(record)


def device(records: Iterable[dict[str, Any]]) -> str:
    """The machines that produced ``records``, in words: GPU or CPU, model and cores, and the training's precision."""
    machines = {f"{'GPU' if (r.get('machine') or {}).get('gpu') else 'CPU only'} ({trained_on(r)})" for r in records}
    return "; ".join(sorted(machines)) or "unknown"


def convergence(arch: str, dense: Sequence[float]) -> str:
    """What a budget whose dense ``arch`` reaches ``dense`` (% per seed) leaves open, in one sentence for a summary;
    empty when it is close to converged or there is nothing to judge by."""
    converged = CONVERGED.get(arch)
    if not dense or converged is None or converged - statistics.mean(dense) <= FAR_FROM_CONVERGED:
        return ""
    return (
        f"This budget is far from converged (dense {statistics.mean(dense):.1f}% against {converged:.2f}% "
        "converged): its verdicts say how tickets train early, not whether they win at convergence."
    )


def budget_note(records: Sequence[dict[str, Any]], arch: str, dense: Sequence[float], also: str = "") -> str:
    """Which budget and device produced a table section (from its records) and what that budget can and cannot show,
    judged by how far its ``dense`` accuracies (one per seed, %) are from the converged network's; ``also``: what
    the table adds (say, which of its measures depend on the device)."""
    budgets = ", ".join(f"`{b}`" for b in sorted({r["budget"] for r in records}))
    text = f"**Budget {budgets}, on {device(records)}.** "
    converged = CONVERGED.get(arch)
    if not dense:
        text += f"No dense {arch} run at this budget, so how far it is from converged is unknown. "
    else:
        mean = statistics.mean(dense)
        seeds = f"{len(dense)} seeds, spread ±{statistics.stdev(dense):.2f} pp" if len(dense) > 1 else "one seed"
        text += f"The dense {arch} reaches {mean:.2f}% here ({seeds}"
        if converged is None:
            text += f"); no converged accuracy of {arch} to compare with. "
        elif converged - mean > FAR_FROM_CONVERGED:
            text += (
                f"; He et al. 2016: {converged:.2f}% converged, {converged - mean:.1f} pp higher). Far from converged: "
                "this budget shows that the pipeline runs end to end, how tickets compare early in training, and "
                "everything that does not depend on training (parameters, FLOPs). It cannot show whether tickets win "
                "at convergence: shallower networks converge faster, so a ticket ahead of the dense network here says "
                "nothing about the converged regime the paper reports, whose differences are tenths of a point. "
            )
        else:
            text += (
                f"; He et al. 2016: {converged:.2f}% converged). Close to converged: the differences are comparable "
                "in kind with the paper's, within the seed spread shown. "
            )
    return (text + also).strip()


@dataclass(frozen=True)
class Section:
    """One setting of a table (an arch at a budget, or an arch the paper has and we have not run): its title, our
    numbers (``body``), the paper's claims next to ours, and the command that runs what is missing."""

    title: str
    body: tuple[str, ...]
    claims: tuple[Claim, ...]
    run: str = ""
    caveat: str = ""


def command(table: str, arch: str, options: str = "") -> str:
    """The command that produces ``table``'s records for ``arch`` (BUDGET: a name of ``examples/cifar/budgets.py``)."""
    return f"python -m examples.cifar.{table} --arch {arch} {options + ' ' if options else ''}--budget BUDGET"


def paper_only(arch: str, claims: Sequence[Claim], run: str, missing: str = "runs") -> Section:
    """The section of an arch the paper has and our store has not (``missing``: what of ours the paper's numbers
    would compare with, e.g. its criterion's tickets): the paper's column alone, and how to fill ours."""
    return Section(
        f"{arch}, the paper's numbers only",
        (f"No {missing} of ours for {arch} yet: `{run}` makes them.", ""),
        tuple(claims),
        run,
    )


def table_text(
    heading: str, intro: Sequence[str], sections: Sequence[Section], source: str, after_summary: Sequence[str] = ()
) -> str:
    """A table of the page: a generated summary per setting, then each setting's numbers, the paper's next to ours."""
    lines = [heading, "", *intro, "**Summary (generated).**", ""]
    lines += [f"- {summary(s.claims, s.title, run=s.run, caveat=s.caveat)}" for s in sections]
    lines += ["", *after_summary]
    for s in sections:
        lines += [f"### {s.title}", "", *s.body]
        if any(c.paper is not None for c in s.claims):
            lines += [f"The paper's numbers ({source}) next to ours:", "", *comparison(s.claims), ""]
        else:
            lines += ["The paper prints no number for these tickets.", ""]
    return "\n".join(lines)
