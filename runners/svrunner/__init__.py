"""spectravenv's runner package: runs inside each env, and its pure parts serve the host too.

Everything here uses the standard library only (the VLMEvalKit-facing modules import the env's
packages lazily), because it runs under the env's Python, where spectravenv is not installed.
The host imports the shared, format-owning modules from here (the events protocol, redaction,
the one atomic writer, file locks, subset choice, fingerprints), so a writer and its reader can
never drift apart.

    files        the one atomic-write helper, sha256 of a file
    redact       masking of secret values (whole, split across lines, streamed) and sealing
    protocol     the events format: the writer (runner) and the reader (both sides)
    locking      lock files that never hang: timeouts, holder info, stale-lock recovery
    sampling     the stratified, content-keyed --limit subset
    fingerprint  what makes a prediction reusable: settings, env, model, checkpoint, data
    units        work units on disk: claims (O_EXCL, NFS-safe), done and failed markers
    kit          the VLMEvalKit adapter (0.0.20), imported inside the env only
    predictions  reuse of earlier and partial predictions
    runner       the worker: pairs prepared once, infer units, the merge and evaluation
    demo         the built-in demo model and datasets
    main         the entry point (runners/vlmeval_runner.py calls it)
"""
