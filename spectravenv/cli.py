"""The command line: parse, call the domain modules, print. No logic of its own."""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__
from .errors import SpectravenvError


def _say(msg: str) -> None:
    click.echo(msg, err=True)


class _Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpectravenvError as e:
            _say(f"spectravenv: error: {e}")
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _say("spectravenv: interrupted")
            sys.exit(130)
        except OSError as e:
            if e.errno == 28:  # ENOSPC
                _say(
                    "spectravenv: error: no space left on device; free some or move SPECTRAVENV_HOME"
                )
                sys.exit(2)
            raise


def _context():
    from . import catalog
    from .paths import Paths

    paths = Paths.from_env()
    return paths, catalog.load(paths)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spectravenv")
def cli() -> None:
    """Evaluate vision-language models across conflicting transformers versions.

    One hash-locked virtualenv per transformers version, built on demand with uv; each model's
    VLMEvalKit inference runs inside its env on the GPUs spectravenv assigns.
    """


# ---- catalog -----------------------------------------------------------------------------------


@cli.command()
def models() -> None:
    """List the models in the catalog and the env each one runs in."""
    from .console import table

    _, cat = _context()
    rows = [
        (
            m.name,
            m.env,
            m.family,
            f"{m.gpu_memory_gb:g} GB",
            m.gpus,
            "yes" if m.cpu else "",
            m.origin,
        )
        for m in sorted(cat.models.values(), key=lambda m: (m.env, m.name))
    ]
    click.echo(table(("model", "env", "family", "GPU memory", "GPUs", "CPU ok", "source"), rows))


@cli.command()
def benchmarks() -> None:
    """List the benchmarks in the catalog."""
    from .console import table

    _, cat = _context()
    rows = [
        (b.name, b.category, b.kind, b.metric or "(none)", b.samples,
         ("experimental " if b.experimental else "") + (f"VLMEvalKit>={b.since_vlmeval}" if b.since_vlmeval else ""))
        for b in sorted(cat.benchmarks.values(), key=lambda b: (b.category, b.name))
    ]  # fmt: skip
    click.echo(
        table(("benchmark", "category", "kind", "headline metric", "samples", "notes"), rows)
    )


# ---- environments ------------------------------------------------------------------------------


@cli.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option(
    "--upgrade", is_flag=True, help="Re-resolve every pin instead of keeping the current ones."
)
def lock(env_names: tuple[str, ...], upgrade: bool) -> None:
    """Compile hash-locked requirements for ENVs (all when none named) with uv."""
    from . import locks

    paths, cat = _context()
    for name in env_names or tuple(cat.envs):
        env = cat.env(name)
        _say(f"locking {name} from {env.source} ...")
        out = locks.compile_lock(env, paths, upgrade=upgrade)
        n = len(locks.read(out, name))
        click.echo(f"{name}: {n} packages pinned with sha256 hashes in {out}")


@cli.command()
@click.argument("env_names", metavar="[ENV]...", nargs=-1)
@click.option("--no-addons", is_flag=True, help="Skip git-only add-ons (they need network access).")
def sync(env_names: tuple[str, ...], no_addons: bool) -> None:
    """Build ENVs (all when none named) if missing or out of date; a no-op when ready."""
    from . import envs

    paths, cat = _context()
    chosen = [cat.env(n) for n in env_names] or list(cat.envs.values())
    failed = []
    for env in chosen:
        st = envs.ensure(env, paths, report=_say)
        click.echo(f"{env.name}: ready ({st.path})")
        if no_addons:
            continue
        for addon in (a for a in cat.addons.values() if a.env == env.name):
            try:
                envs.ensure_addon(addon, st, paths, report=_say)
            except SpectravenvError as e:
                _say(f"spectravenv: error: {e}")
                failed.append(addon.name)
    if failed:
        sys.exit(1)


@cli.command(name="envs")
def envs_cmd() -> None:
    """Show every env: transformers, Python, lock hash, state, disk use and its models."""
    from . import envs, locks
    from .console import size, table

    paths, cat = _context()
    rows, seen, folders = [], set(), []
    for env in cat.envs.values():
        try:
            st = envs.status(env, paths)
        except SpectravenvError as e:
            rows.append((env.name, env.transformers, env.python, "-", "broken", "-", str(e)[:60]))
            continue
        folder = [st.path] if st.path.exists() else []
        folders += folder
        python = (st.marker or {}).get("python", env.python)
        state = st.state + (f" ({st.reason})" if st.reason and st.state != "ready" else "")
        rows.append((
            env.name, env.transformers, python, locks.digest(env.lock)[:12], state,
            size(envs.disk_usage(folder, seen)) if folder else "-",
            ", ".join(cat.models_of_env(env.name)),
        ))  # fmt: skip
    click.echo(table(("env", "transformers", "python", "lock", "state", "disk", "models"), rows))
    if folders:
        click.echo(f"\n{len(folders)} env(s) on disk take {size(envs.disk_usage(folders))} together "
                   f"(files shared through hardlinks counted once) under {paths.envs}")  # fmt: skip


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(dry_run: bool) -> None:
    """Remove envs that no catalog lock references any more, and left-overs of killed builds."""
    from . import envs
    from .console import size

    paths, cat = _context()
    doomed = envs.garbage(cat, paths)
    if not doomed:
        click.echo("nothing to remove")
        return
    freed = envs.disk_usage(doomed)
    if dry_run:
        for p in doomed:
            click.echo(f"would remove {p}")
        click.echo(f"would free about {size(freed)}")
        return
    removed = envs.collect(cat, paths, report=_say)
    for p in removed:
        click.echo(f"removed {p}")
    click.echo(f"freed about {size(freed)}")


def main() -> None:
    cli(prog_name="spectravenv")


if __name__ == "__main__":
    main()
