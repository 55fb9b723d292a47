"""`models` and `benchmarks`: what the catalog holds."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from spectravenv.cli.common import context
from spectravenv.console import plural, table

if TYPE_CHECKING:  # the catalog is imported inside the commands: CLI start-up stays fast
    from spectravenv.catalog.entries import Benchmark, Model
    from spectravenv.catalog.suites import Suite


@click.command()
@click.argument("search", required=False)
@click.option("--env", "env_name", metavar="ENV", help="Only the models of this env.")
@click.option(
    "--family", help="Only this family: a part of VLMEvalKit's group name, e.g. qwen or internvl."
)
@click.option(
    "--kind", type=click.Choice(["local", "api"]), help="Only local (weights) or API models."
)
@click.option("--runnable", is_flag=True, help="Only the models the shipped envs can run.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON record per model (env, needs, evidence, ...)."
)
def models(search, env_name, family, kind, runnable, as_json) -> None:
    """List the models in the catalog: env, GPU memory, what each still needs, how far verified.

    SEARCH keeps those whose name or family holds it (any case, separators aside)."""
    from spectravenv.catalog import entries as catalog
    from spectravenv.console import table

    _, cat = context()
    chosen = cat.select_models(search, env=env_name, family=family, kind=kind, runnable=runnable)
    if as_json:
        import json

        click.echo(json.dumps([catalog.model_record(m) for m in chosen], indent=1))
        return
    if not chosen:  # each filter matches models, but none matches them all
        given = [f"{k} {v}" for k, v in (("SEARCH", search), ("--env", env_name), ("--family", family),
                                          ("--kind", kind)) if v] + ["--runnable"] * runnable  # fmt: skip
        click.echo(f"no model matches {', '.join(given)} together; drop one of them")
        return
    rows = [
        (m.name, m.env, m.family, "-" if m.kind == "api" else f"{m.gpu_memory_gb:g} GB",
         "api" if m.kind == "api" else ("yes" if m.multi_gpu else ""), model_status(m))
        for m in chosen
    ]  # fmt: skip
    click.echo(table(("model", "env", "family", "GPU memory", "spreads", "status"), rows))
    blocked = sum(1 for m in chosen if m.blocked)
    click.echo(
        f"\n{plural(len(chosen), 'model')}, {len(chosen) - blocked} runnable; `--json` for needs, evidence"
        " and the whole reason a model is blocked"
    )


STATUS_WIDTH = 72  # the status column's widest reason: the whole one is in --json


def model_status(m: Model) -> str:
    """The `models` status: how far verified, or why blocked as a whole phrase (see
    short_reason), never text cut mid-sentence."""
    if not m.blocked:
        return m.verified
    return "blocked: " + short_reason(m.blocked, STATUS_WIDTH)


def short_reason(text: str, width: int) -> str:
    """The first clause of a reason (up to its first ':' or ';' outside parentheses); when that
    is wider than `width`, its part before a ',' and then before a '(' (outside parentheses),
    and only then whole words of it."""
    clause = _head(text, ":;")
    for stops in (",", "("):
        if len(clause) > width:
            clause = _head(clause, stops)
    return clause if len(clause) <= width else textwrap.shorten(clause, width, placeholder=" ...")


def _head(text: str, stops: str) -> str:
    """`text` up to the first of `stops` that is outside parentheses."""
    depth = 0
    for i, c in enumerate(text):
        if c in stops and depth == 0:
            return text[:i].strip()
        depth += (c == "(") - (c == ")")
    return text.strip()


@click.command()
@click.argument("search", required=False)
@click.option("--type", "kind", metavar="TYPE", help="Only this type: MCQ, Y/N, VQA, OCR, caption, grounding, ...")
@click.option("--modality", type=click.Choice(["image", "multi-image", "video", "text"]),
              help="Only what its questions show.")  # fmt: skip
@click.option("--judge", type=click.Choice(["none", "optional", "required"]),
              help="Only those whose scoring needs a judge model this much (optional: exact matching works).")  # fmt: skip
@click.option("--suites", "show_suites", is_flag=True, help="List the suites (one name for several benchmarks).")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per benchmark (URL, judge, evidence, ...).")
def benchmarks(search, kind, modality, judge, show_suites, as_json) -> None:
    """List the benchmarks in the catalog: every dataset of the envs' VLMEvalKit.

    SEARCH keeps those whose name, VLMEvalKit class or type holds it (any case)."""
    import json

    from spectravenv.catalog import entries as catalog

    _, cat = context()
    if show_suites:
        click.echo(suites_text([s for s in cat.suites.values() if not search or search.lower() in s.name.lower()],
                               as_json))  # fmt: skip
        return
    chosen = cat.select_benchmarks(search, kind=kind, modality=modality, judge=judge)
    if as_json:
        click.echo(json.dumps([catalog.benchmark_record(b) for b in chosen], indent=1))
        return
    click.echo(table(("benchmark", "class", "type", "modality", "samples", "judge", "headline", "status"),
                     benchmark_rows(chosen)))  # fmt: skip
    click.echo("\n" + benchmarks_summary(chosen))


def suites_text(suites: list[Suite], as_json: bool) -> str:
    if as_json:
        import json

        return json.dumps([{"name": s.name, "description": s.description, "benchmarks": list(s.benchmarks),
                            "source": str(s.source)} for s in suites], indent=1)  # fmt: skip
    return ("\n".join(suite_lines(suites)) + f"\n\n{plural(len(suites), 'suite')}; use a suite's name wherever a benchmark's "
            "goes, e.g. `spectravenv eval MODEL openvlm`")  # fmt: skip


def benchmarks_summary(chosen: list[Benchmark]) -> str:
    if not chosen:
        return "no benchmark matches: SEARCH is a part of a name, VLMEvalKit class or type (any case)"
    modalities = Counter(b.modality for b in chosen)
    needs = Counter(b.judge_need for b in chosen)
    return (f"{plural(len(chosen), 'benchmark')} (" + ", ".join(f"{n} {m}" for m, n in sorted(modalities.items())) + "): "
            f"{sum(not b.blocked for b in chosen)} runnable, {sum(bool(b.headline) for b in chosen)} with a headline "
            f"metric; a judge required by {needs['required']}, optional for {needs['optional']}.\n"
            "samples ~N: an estimate until the TSV is on disk. `--json` for URLs, judges and evidence; "
            "`--suites` for suites")  # fmt: skip


def benchmark_rows(benchmarks: Iterable[Benchmark]) -> list[tuple[object, ...]]:
    """`spectravenv benchmarks` table rows. The status is a whole phrase (the first clause of a
    reason: the rest is in --json), never text cut at a width."""
    rows = []
    for b in benchmarks:
        judge = "-" if b.judge_need == "none" else f"{b.judge_need}" + (f": {b.judge}" if b.judge else "")
        status = ("not yet: " + b.blocked.split(":")[0] if b.blocked else "inference only" if b.inference_only
                  else "experimental" if b.experimental else "runnable")  # fmt: skip
        samples = f"~{b.samples}" if b.samples_estimated else b.samples
        rows.append((b.name, b.vlmeval_class or ("built-in" if b.builtin else "custom"), b.kind, b.modality,
                     samples, judge, b.metric if b.headline else "none", status))  # fmt: skip
    return rows


def suite_lines(suites: Iterable[Suite], width: int = 100) -> list[str]:
    """Each suite: its name, size and description, then its benchmarks wrapped at `width`."""
    lines = []
    for s in suites:
        lines.append(f"{s.name} ({len(s.benchmarks)}): {s.description}".rstrip(": "))
        lines += textwrap.wrap(", ".join(s.benchmarks), width, initial_indent="  ", subsequent_indent="  ",
                               break_on_hyphens=False)  # fmt: skip
    return lines
