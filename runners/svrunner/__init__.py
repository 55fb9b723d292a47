"""spectravenv's runner package: runs inside each env, and its pure parts serve the host too.

Everything here uses the standard library only (the VLMEvalKit-facing modules import the env's
packages lazily), because it runs under the env's Python, where spectravenv is not installed.
The host imports the shared, format-owning modules from here (the events protocol, redaction,
the one atomic writer, file locks, subset choice, fingerprints), so a writer and its reader can
never drift apart.

    files        the one atomic-write helper, sha256 of a file
    redact       masking of secret values (whole, split across lines, streamed) and sealing
    protocol     the events format: the writer (runner) and the reader (both sides)
    locking      lock files that never hang: timeouts, holder info, leases, safe stale-lock recovery
    lmudata      what spectravenv keeps in <LMUData>/.spectravenv/ (dataset locks, hash cache)
    sampling     the stratified, content-keyed --limit subset
    fingerprint  what makes a prediction reusable: settings, env, model, checkpoint, data
    units        work units on disk: claims (NFS-safe), done markers per fingerprint, failures
    kit          the VLMEvalKit adapter (0.0.20), imported inside the env only
    predictions  reuse of earlier and partial predictions
    heartbeat    `alive` events from a thread while a phase shows no progress
    shutdown     SIGTERM as an orderly exit (every `finally` runs, claims and locks are released)
    runner       the worker: pairs prepared once, infer units, the merge and evaluation
    demo/        the built-in demo model and datasets (a package: scenes, datasets, training, ...)
    main         the entry point (runners/vlmeval_runner.py calls it)
"""
