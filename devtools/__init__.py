"""Development tooling, kept apart from the product (`include/drill_progress`): the local stack behind
`make up` (devstack), local PostgreSQL and AWS-emulator servers (services), the simulated Dialog
Context (simulator), fault-injection support (chaos) and a stream reader for checks (streams).
Importable from the repository root (`python -m devtools.devstack`); never shipped in the image."""
