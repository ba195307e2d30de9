"""Composition roots: what each kind of process builds (docs/architecture.md).

`shared` (store, storage, keys, uploads, start-up checks), `api` (the FastAPI app; no engine,
no torch), `worker` (runner, job body, consumers), `embedded` (api + worker in one process).
"""
