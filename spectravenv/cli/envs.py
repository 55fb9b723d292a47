"""`lock`, `sync`, `wheelhouse export`, `envs`, `gc` and `selftest`: the envs and their state."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from spectravenv.cli.common import context, say
from spectravenv.errors import SpectravenvError


@click.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option(
    "--upgrade", is_flag=True, help="Re-resolve every pin instead of keeping the current ones."
)
def lock(env_names: tuple[str, ...], upgrade: bool) -> None:
    """Compile hash-locked requirements for ENVs (all when none named) with uv."""
    from spectravenv.envs import locks

    paths, cat = context()
    for name in env_names or tuple(cat.envs):
        env = cat.env(name)
        say(f"locking {name} from {env.source} ...")
        out = locks.compile_lock(env, paths, upgrade=upgrade)
        n = len(locks.read(out, name))
        click.echo(f"{name}: {n} packages pinned with sha256 hashes in {out}")


@click.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option("--no-addons", is_flag=True, help="Skip git-only add-ons (they need network access).")
@click.option("--wheelhouse", type=click.Path(path_type=Path), metavar="DIR",
              help="Build from this `wheelhouse export` folder, with no index at all  [env: SPECTRAVENV_WHEELHOUSE]")  # fmt: skip
def sync(env_names: tuple[str, ...], no_addons: bool, wheelhouse: Path | None) -> None:
    """Build ENVs (all when none named) if missing or out of date; a no-op when ready."""
    import dataclasses

    from spectravenv.envs import venv as envs

    paths, cat = context()
    if wheelhouse is not None:
        from spectravenv.envs import wheelhouse as wh

        paths = dataclasses.replace(paths, wheelhouse=wheelhouse.absolute())
        wh.read_manifest(paths.wheelhouse)  # a wrong folder is an error now, not after a build
    chosen = [cat.env(n) for n in env_names] or list(cat.envs.values())
    failed = []
    for env in chosen:
        st = envs.ensure(env, paths, report=say)
        click.echo(f"{env.name}: ready ({st.path})")
        if no_addons:
            continue
        for addon in (a for a in cat.addons.values() if a.env == env.name):
            try:
                envs.ensure_addon(addon, st, paths, report=say)
            except SpectravenvError as e:
                say(f"spectravenv: error: {e}")
                failed.append(addon.name)
    if failed:
        sys.exit(1)


@click.group()
def wheelhouse() -> None:
    """Wheelhouses: every file of some envs' locks in one folder, to build them with no index."""


@wheelhouse.command(name="export")
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
def wheelhouse_export(folder: Path, env_names: tuple[str, ...]) -> None:
    """Put every file the ENVs (all when none named) need into DIR: the lock's files, hash-checked,
    wheels built here from sdist-only packages, add-ons, and a manifest. Files already there with
    the right sha256 are kept; run it again to finish an interrupted export."""
    from spectravenv.console import size
    from spectravenv.envs import wheelhouse as wh

    paths, cat = context()
    summary = wh.export(cat, paths, folder, env_names, report=say)
    for e in summary.envs:
        built = f", {len(e.built)} built from sdists ({', '.join(e.built)})" if e.built else ""
        base = f", {len(e.left_to_base)} left to base_python" if e.left_to_base else ""
        click.echo(
            f"{e.name}: {e.packages} packages in {e.files} files{built}{base}; {e.requirements}"
        )
    for name, why in summary.addons_missing:
        say(f"spectravenv: warning: add-on {name} was not exported: {why}")
    click.echo(
        f"{summary.folder}: {size(summary.total_bytes)} in all; downloaded {summary.downloaded_files} "
        f"files ({size(summary.downloaded_bytes)}), {summary.already_there} were already there; "
        f"{summary.seconds:.0f} s. Build from it with `spectravenv sync --wheelhouse {summary.folder}` "
        f"or SPECTRAVENV_WHEELHOUSE={summary.folder}"
    )


@click.command(name="envs")
@click.option("--models", "show_models", is_flag=True, help="List each env's models (one line per env).")
@click.option("--json", "as_json", is_flag=True, help="Every env with its models, as JSON.")
def envs_cmd(show_models: bool, as_json: bool) -> None:
    """Show every env: transformers, Python, lock hash, state, disk use and how many models it
    runs (--models lists them, --json gives everything for machines)."""
    import json
    import textwrap

    from spectravenv.console import size, table
    from spectravenv.envs import venv as envs

    paths, cat = context()
    views = envs.overview(cat, paths)
    if as_json:
        click.echo(json.dumps([{"env": v.name, "transformers": v.transformers, "python": v.python,
                                "lock": v.lock, "state": v.state, "disk_bytes": v.disk_bytes,
                                "models": list(v.models)} for v in views], indent=2))  # fmt: skip
        return
    rows = [(v.name, v.transformers, v.python, v.lock, v.state[:60],
             size(v.disk_bytes) if v.disk_bytes is not None else "-", len(v.models)) for v in views]  # fmt: skip
    click.echo(table(("env", "transformers", "python", "lock", "state", "disk", "models"), rows))
    if show_models:
        for v in views:
            text = f"{v.name} ({len(v.models)}): {', '.join(v.models) or '-'}"
            click.echo("\n" + textwrap.fill(text, width=100, subsequent_indent="  ", break_on_hyphens=False))
    else:
        click.echo("\n(--models lists each env's models; --json gives everything)")
    folders = [v.folder for v in views if v.folder is not None]
    if folders:
        click.echo(f"\n{len(folders)} env(s) on disk take {size(envs.disk_usage(folders))} together "
                   f"(files shared through hardlinks counted once) under {paths.envs}")  # fmt: skip


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(dry_run: bool) -> None:
    """Remove envs that no catalog lock references any more, and left-overs of killed builds."""
    from spectravenv.console import size
    from spectravenv.envs import venv as envs

    paths, cat = context()
    doomed = envs.garbage(cat, paths)
    if not doomed:
        click.echo("nothing to remove")
        return
    freed = envs.freed_by_removing(doomed)
    if dry_run:
        for p in doomed:
            click.echo(f"would remove {p}")
        click.echo(f"would free about {size(freed)}")
        return
    removed = envs.collect(cat, paths, report=say)
    for p in removed:
        click.echo(f"removed {p}")
    click.echo(f"freed about {size(freed)}")


@click.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option(
    "--family", "families", multiple=True, help="Only this family or recipe (repeatable)."
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(path_type=Path),
    help="Also write the results as JSON here.",
)
def selftest(env_names, families, json_file) -> None:
    """Check every env (all when none named): each family's VLMEvalKit wrapper runs on a tiny
    checkpoint made here, on the GPU if one is visible, else the CPU; nothing is downloaded."""
    from spectravenv.envs import selftest as st

    paths, cat = context()
    results = st.run(cat, paths, list(env_names), set(families) or None, report=say)
    click.echo(st.table(results))
    if json_file:
        from svrunner.files import write_atomic

        write_atomic(json_file, st.as_json(results))
    sys.exit(st.exit_code(results))
